"""An on-demand request's run opens in the commit of its grants and closes in the commit of
its decided applicant (SQLite and PostgreSQL): two durable commits fewer per request, and
the run still committed before any paid call. The limiter's counters (per-person caps and
spend, in the database when no Redis is configured) commit on their own, without waiting for
the flush to disk: they are counted apart from the durable commits."""

from __future__ import annotations

from sqlalchemy import event, text

from idv.synthetic import Mix, applicants

KINDS = {
    "run.started",
    "run.finished",
    "consent.granted",
    "consent.allowed",
    "consent.denied",
    "step.completed",
    "applicant.decided",
}


def test_a_request_opens_its_run_with_its_grants_and_closes_it_with_its_decision(
    on_demand_api,
):
    rt, client = on_demand_api
    [person] = [
        x
        for x in applicants(1, seed=81, prefix="OC-", mix=Mix(invalid=0, no_consent=0))
        if isinstance(x, dict)
    ]
    # Which transaction (by the commits before it) wrote into which table, and which audit
    # events (by kind) each appended.
    commits: list[int] = []
    wrote: list[tuple[int, str]] = []
    appended: list[tuple[int, str]] = []

    def executed(_conn, _cursor, statement, parameters, *_args):
        words = statement.split()
        if words and words[0].upper() in ("INSERT", "UPDATE"):
            table = words[2] if words[0].upper() == "INSERT" else words[1]
            wrote.append((len(commits), table.strip('"').split(".")[-1]))
        if "audit_events" not in statement or not words or words[0].upper() != "INSERT":
            return
        # One row (a dict, or a tuple on SQLite's driver path) or several.
        many = isinstance(parameters, list) or (
            isinstance(parameters, tuple) and parameters and isinstance(parameters[0], tuple)
        )
        for row in parameters if many else [parameters]:
            values = row.values() if isinstance(row, dict) else row
            appended.extend((len(commits), v) for v in values if v in KINDS)

    event.listen(rt.store.engine, "commit", lambda _conn: commits.append(1))
    event.listen(rt.store.engine, "before_cursor_execute", executed)
    answer = client.post("/verifications", json=person)
    assert answer.status_code == 201, answer.text
    run_id = answer.json()["run_id"]
    with rt.store.engine.connect() as conn:
        status, counts = conn.execute(
            text("select status, counts from runs where id = :id"), {"id": run_id}
        ).one()
        kinds = [
            k
            for (k,) in conn.execute(
                text("select kind from audit_events where kind not like 'step.%' order by seq")
            )
        ]
    assert status == "finished"
    # The run's start is the first event of the grants' commit, its end the event after
    # the decided applicant's; the paid calls' decisions come between.
    first = kinds.index("run.started")
    assert kinds[first + 1] == "consent.granted"
    assert kinds.index("consent.allowed") > first
    assert kinds[kinds.index("applicant.decided") + 1] == "run.finished"

    def transactions(table: str) -> set[int]:
        return {n for n, t in wrote if t == table}

    # The run's row is written in the grants' transaction, its end in the decided
    # applicant's: no commit of their own.
    assert transactions("runs") == transactions("consent_events") | transactions("applicants")
    assert len(transactions("runs")) == 2
    only_runs = [n for n in transactions("runs") if {t for m, t in wrote if m == n} <= {"runs"}]
    assert only_runs == []
    # A vendor's answer (`step.completed`) takes no commit of its own: it goes with the next
    # decision, the next call's or the scoring's, or at the latest the decided applicant's.
    paid = [n for n, kind in appended if kind == "step.completed"]
    assert paid
    for n in paid:
        assert {k for m, k in appended if m == n} - {"step.completed", "consent.denied"}, n
    # The durable commits: those that wrote a record. The limiter's counters (caps and
    # spend, in `limit_counters` without Redis) commit without waiting for the flush to disk
    # (`storage.limit_counters`), a count and not a record, and are not among them.
    counted = {n for n, t in wrote if t == "limit_counters"}
    assert counted, "the embedded limiter's counters are in the database"
    counts_only = {n for n in counted if {t for m, t in wrote if m == n} == {"limit_counters"}}
    assert len(commits) - len(counts_only) <= 1 + kinds.count("consent.allowed") + 1
    assert rt.store.audit.verify_chain()[0]
