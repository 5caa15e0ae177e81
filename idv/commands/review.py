"""`idv review`, `idv audit`, `idv explain`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from idv.shell import (
    JsonOpt,
    actor,
    app,
    audit_app,
    review_app,
    runtime,
)
from idv.terminal import (
    EXIT_PROBLEM,
    console,
    emit,
)


@review_app.command("list")
def review_list(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Cases per page.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Cases to skip (the page's start).")] = 0,
    status: Annotated[
        list[str] | None,
        typer.Option(help="open, waiting, pending_confirmation or closed (repeatable)."),
    ] = None,
    queue: Annotated[str | None, typer.Option(help="analyst or supervisor.")] = None,
    reason: Annotated[str | None, typer.Option(help="A reason code.")] = None,
    assignee: Annotated[str | None, typer.Option(help="Assigned to this user.")] = None,
    product: Annotated[str | None, typer.Option(help="A product code.")] = None,
    tag: Annotated[str | None, typer.Option(help="Carrying this tag.")] = None,
    older_than: Annotated[
        int | None, typer.Option("--older-than", min=0, help="Opened at least this many hours ago.")
    ] = None,
    due_within: Annotated[
        int | None, typer.Option("--due-within", min=0, help="Due within this many hours.")
    ] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Assigned to or claimed by me.")] = False,
    unassigned: Annotated[bool, typer.Option("--unassigned", help="Nobody's.")] = False,
    view: Annotated[str | None, typer.Option(help="A saved view's filters.")] = None,
    save_as: Annotated[
        str | None, typer.Option("--save-as", help="Save these filters as a view of this name.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The review queue, most urgent first (due time, then priority), masked, a page at a
    time; with filters, saved views and "my cases"."""
    given = {
        "status": status or None,
        "queue": queue,
        "reason": reason,
        "assignee": assignee,
        "product": product,
        "tag": tag,
        "older_than_hours": older_than,
        "due_within_hours": due_within,
        "mine": mine or None,
        "unassigned": unassigned or None,
        "view": view,
    }
    query = {k: v for k, v in given.items() if v is not None}
    with runtime() as rt:
        cases = rt.services.cases
        if save_as:
            cases.save_view(save_as, query, actor=actor())
        page = cases.queue({**query, "limit": limit, "offset": offset}, actor=actor())
        labels = cases.reason_labels()
        # What the table shows of each id: its shortest unique prefix, which every `idv
        # review` command takes back (`--json` gives the whole ids).
        short = {} if as_json else cases.short_ids(r.case_id for r in page.cases)

    def label(code: str) -> str:
        return labels[code].en if code in labels else code

    if as_json:
        emit(page.model_dump())
        return
    first = page.offset + 1 if page.cases else page.offset
    table = Table(title=f"Review cases {first}-{page.offset + len(page.cases)} of {page.total}")
    for col in (
        "case",
        "applicant",
        "status",
        "queue",
        "prio",
        "due",
        "sla",
        "who",
        "name",
        "ID number",
        "phone",
        "reasons",
    ):
        # The case and the applicant are never cut short: they are what the next command takes.
        table.add_column(col, no_wrap=col in ("case", "applicant"))
    for r in page.cases:
        table.add_row(
            short[r.case_id],
            r.applicant_ref,
            r.status,
            r.queue,
            str(r.priority),
            (r.due_at or "")[:16],
            r.sla,
            r.claimed_by or r.assignee or "",
            r.name or "",
            r.id_number or "",
            r.phone or "",
            "; ".join(label(c) for c in r.reasons),
        )
    console.print(table)
    if page.more:
        console.print(f"{page.more} more: --offset {page.offset + len(page.cases)}")


@audit_app.command("verify")
def audit_verify(as_json: JsonOpt = False) -> None:
    """Check the audit chain end to end: every event, every checkpoint outside the database,
    and the binding of every consent, decision and step result. Exit 1 at the first problem,
    naming the sequence number, the file or the record, and the rule."""
    with runtime() as rt:
        check = rt.services.audit.check_chain(actor=actor())
    if as_json:
        emit(check.model_dump())
    elif check.intact:
        console.print(
            f"audit chain intact: {check.events} events, {check.checkpoints} "
            f"checkpoints, {check.records} bound records"
            + (f" (events through {check.base_seq} purged)" if check.base_seq else "")
        )
    else:
        where = []
        if check.broken_at is not None:
            where.append(f"at event {check.broken_at}")
        if check.file:
            where.append(f"checkpoint file {check.file}")
        if check.record:
            where.append(f"record {check.record_table} {check.record}")
        console.print(
            f"[red]audit chain broken {', '.join(where)}[/red]: {check.rule} "
            f"({check.events} events verified before it)"
        )
    if not check.intact:
        raise typer.Exit(EXIT_PROBLEM)


@audit_app.command("checkpoint-key")
def audit_checkpoint_key(as_json: JsonOpt = False) -> None:
    """The checkpoint key to publish: a proof bundle is checked against it
    (`proofcheck.py BUNDLE --key KEY`), never against the key the bundle carries."""
    with runtime() as rt:
        key = rt.services.audit.checkpoint_key(actor=actor())
    if as_json:
        emit({"checkpoint_key": key})
    else:
        sys.stdout.write(key + "\n")


@audit_app.command("export-proof")
def audit_export_proof(
    applicant_ref: str,
    out: Annotated[Path, typer.Option("--out", help="The bundle's folder (must not exist).")],
    sm3: Annotated[bool, typer.Option("--sm3", help="SM3 digests beside SHA-256.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a proof bundle for one applicant that a third party verifies without our
    database: `python proofcheck.py BUNDLE --key KEY` (shipped inside it; KEY the
    published `idv audit checkpoint-key`)."""
    from idv import proofcheck

    with runtime() as rt:
        bundle = rt.services.audit.export_proof(
            applicant_ref,
            out,
            verifier=Path(proofcheck.__file__),
            actor=actor(),
            digests=("sha256", "sm3") if sm3 else ("sha256",),
        )
    if as_json:
        emit(bundle.model_dump())
        return
    console.print(
        f"proof bundle written to {bundle.path}: {bundle.records} records, "
        f"{bundle.events} chain entries, {bundle.checkpoints} checkpoints "
        f"({', '.join(bundle.digests)}); verify with `python "
        f"{bundle.path}/proofcheck.py {bundle.path} --key KEY` (KEY: `idv audit "
        "checkpoint-key`, as published)"
    )


@app.command()
def explain(applicant_ref: str, as_json: JsonOpt = False) -> None:
    """Why an applicant's outcome is what it is: reasons, score, policy version, steps."""
    with runtime() as rt:
        actor()  # nobody signed in: refused (exit 2), nothing shown
        found = rt.services.explain.explain(applicant_ref).model_dump()
    if as_json:
        emit(found)
        return
    kind = "automated" if found["automated"] else "for a person to decide"
    console.print(
        f"{applicant_ref}: {found['outcome']} ({kind}), score {found['score']}, "
        f"policy {found['policy_version']}"
    )
    for r in found["reasons"]:
        console.print(f"  {r['code']}: {r['en']} / {r['zh']}")
    for c in found.get("contributions") or [
        {"feature": k, "band": v, "points": "-"} for k, v in found["features"].items()
    ]:
        console.print(f"  feature {c['feature']} = {c['band']}: {c['points']} points")
    for a in found.get("alerts", []):
        console.print(f"  alert {a['rule']}: {a['evidence']} (review case {a['review_case_id']})")
    for st in found["steps"]:
        console.print(
            f"  step {st['step']}: {st['status']} ({st['reason']}) under consent "
            f"{', '.join(st['consent_ids']) or '-'}"
        )


@review_app.command("sla")
def review_sla(
    days: Annotated[
        int, typer.Option(min=1, max=366, help="Decisions of the last this many days.")
    ] = 30,
    as_json: JsonOpt = False,
) -> None:
    """Cases not closed by age, how many are due soon and breached, and each person's time
    from a case's opening to their decision (median and 90th percentile, hours)."""
    with runtime() as rt:
        report = rt.services.cases.sla_report(actor=actor(), days=days)
    if as_json:
        emit(report.model_dump())
        return
    console.print(
        f"{report.open_total} open, {report.due_soon} due soon, "
        f"{report.breached} breached (as of {report.as_of[:16]})"
    )
    ages = Table(title="Open cases by age")
    for col in ("age", "open", "due soon", "breached"):
        ages.add_column(col)
    for b in report.buckets:
        ages.add_row(b.bucket, str(b.open), str(b.due_soon), str(b.breached))
    console.print(ages)
    people = Table(title=f"Time to decision, last {report.days} days (hours)")
    for col in ("who", "decisions", "median", "p90"):
        people.add_column(col)
    for a in report.analysts:
        people.add_row(a.actor, str(a.decisions), f"{a.median_hours:g}", f"{a.p90_hours:g}")
    console.print(people)
