"""Bindings checked across the database, and the material of a subject's proof bundle.

`ProofRepository.check` walks the audit chain (`AuditLog.check`) and then every consent
event, decision, step result, legal hold, review case, user and credential against the
events that bound them (`storage.bindings`), both ways: a record its event does not vouch
for, and an event whose record is gone. A record deliberately deleted (retention) is named
by a `records.purged` event (`records_purged`) and is then not missing.

`ProofRepository.material` gathers, for one subject, what a third party needs to check its
records without the database: each record's canonical bytes, the events that bind them, and
for each checkpoint covering those events the chain from just before them to the
checkpoint's size (every event of the subject in full, and each `records.purged` event
naming one; every other event as its leaf hash only), and the subject index the checkpoint
key signs (`Material.index`), so that none of the subject's events can pass as a leaf.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from storage import models as m
from storage.audit import AuditLog, ChainReport, event_body, leaf_hash
from storage.bindings import (
    CONSENT_KINDS,
    DECISION_FIELDS,
    DECISION_KINDS,
    RECORDS_PURGED,
    STEP_FIELDS,
    STEP_KINDS,
    BindingError,
    binds_cases,
    check_case,
    closing_hash,
    consent_fields,
    consent_hash,
    credential_hash,
    decision_hash,
    read_holds,
    record_body,
    step_hash,
    user_hash,
)
from storage.context import StoreContext
from storage.crypto import digest

_BINDING_KINDS = set(CONSENT_KINDS) | set(DECISION_KINDS) | set(STEP_KINDS) | {RECORDS_PURGED}
_PEOPLE_KEYS = {"user_hash", "credential_hash", "credentials_revoked"}


@dataclass(frozen=True)
class BindingIssue:
    """The first record that does not match the chain: table, record id or ref, rule, and the
    audit sequence number concerned (if any)."""

    table: str
    record: str
    rule: str
    seq: int | None = None


@dataclass(frozen=True)
class ProofCheck:
    chain: ChainReport
    binding: BindingIssue | None = None
    records: int = 0

    @property
    def intact(self) -> bool:
        return self.chain.intact and self.binding is None


@dataclass
class Material:
    """What `material` found for one subject (no personal values)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    segments: list[dict[str, Any]] = field(default_factory=list)

    def index(self, origin: str, subject_ref: str) -> str:
        """The body of the bundle's subject index, for the checkpoint key to sign: per
        segment (its checkpoint's size and its first sequence number), every event carried
        in whole. A verifier refuses a bundle where one of them is a bare leaf hash (an
        event of the subject, a withdrawal say, hidden among the others')."""
        lines = [f"{origin} {INDEX_HEADER}", subject_ref]
        for seg in self.segments:
            whole = [str(e["seq"]) for e in seg["entries"] if "body" in e]
            lines.append(f"{seg['size']} {seg['start_seq']} {','.join(whole)}")
        return "\n".join(lines) + "\n"


# The first line of a subject index, after the origin: never a checkpoint's size.
INDEX_HEADER = "subject index v1"


class ProofRepository:
    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    def check(self) -> ProofCheck:
        """The chain and its checkpoints, then every binding; the first problem is named."""
        events: dict[int, tuple[str, str | None, dict[str, Any]]] = {}

        cases: dict[str | None, list[Any]] = defaultdict(list)  # by subject
        people: dict[int, tuple[str, dict[str, Any]]] = {}  # events binding users, credentials

        def keep(e: Any) -> None:
            if e.kind in _BINDING_KINDS:
                events[e.seq] = (e.kind, e.subject_ref, e.detail)
            if binds_cases(e.detail):
                cases[e.subject_ref].append(e)
            if isinstance(e.detail, dict) and (
                _PEOPLE_KEYS & e.detail.keys() or e.kind == "credential.revoked"
            ):
                people[e.seq] = (e.kind, e.detail)

        chain = self._audit.check(keep)
        if not chain.intact:
            return ProofCheck(chain=chain)
        purged: dict[str, set[int]] = defaultdict(set)
        for kind, _, d in events.values():
            if kind == RECORDS_PURGED:
                purged[str(d.get("table"))].update(d.get("audit_seqs") or ())
        issues: list[BindingIssue] = []
        count = 0
        with self._ctx.engine.connect() as conn:
            # Consent events: each row bound; each ledger event with its row.
            seen: set[int] = set()
            for r in conn.execute(
                select(m.ConsentEvent.__table__).execution_options(yield_per=1000)
            ):
                count += 1
                e = events.get(r.audit_seq) if r.audit_seq is not None else None
                if (
                    e is None
                    or e[1] != r.subject_ref
                    or CONSENT_KINDS.get(e[0]) != r.event
                    or e[2].get("record_hash") != consent_hash(r)
                ):
                    issues.append(
                        BindingIssue(
                            "consent_events",
                            r.id,
                            "the consent record is not the one its audit event recorded",
                            r.audit_seq,
                        )
                    )
                else:
                    seen.add(r.audit_seq)
            for seq, (kind, _, d) in events.items():
                if (
                    kind in CONSENT_KINDS
                    and seq not in seen
                    and seq not in purged["consent_events"]
                ):
                    issues.append(
                        BindingIssue(
                            "consent_events",
                            str(d.get("consent_id")),
                            f"the ledger lost the record audit event {seq} recorded",
                            seq,
                        )
                    )
            # Decisions: each the latest of its applicant's decision events, hash matching.
            latest: dict[str, int] = {}
            for seq, (kind, ref, _) in events.items():
                if kind in DECISION_KINDS and ref is not None:
                    latest[ref] = max(latest.get(ref, 0), seq)
            decided: set[str] = set()
            for a in conn.execute(select(m.Applicant.__table__).execution_options(yield_per=1000)):
                count += 1
                decided.add(a.applicant_ref)
                e = events.get(a.decision_seq) if a.decision_seq is not None else None
                if (
                    e is None
                    or e[0] not in DECISION_KINDS
                    or e[1] != a.applicant_ref
                    or e[2].get("decision_hash") != decision_hash(a)
                ):
                    issues.append(
                        BindingIssue(
                            "applicants",
                            a.applicant_ref,
                            "the decision is not the one its audit event recorded",
                            a.decision_seq,
                        )
                    )
                elif latest.get(a.applicant_ref) != a.decision_seq:
                    issues.append(
                        BindingIssue(
                            "applicants",
                            a.applicant_ref,
                            "the decision is not the latest the audit chain recorded",
                            latest.get(a.applicant_ref),
                        )
                    )
            for ref, seq in latest.items():
                if ref not in decided and seq not in purged["applicants"]:
                    issues.append(
                        BindingIssue(
                            "applicants",
                            ref,
                            f"the decision audit event {seq} recorded is missing",
                            seq,
                        )
                    )
            # Step results: each listed by its event; each listed hash with its row.
            by_seq: dict[int, set[str]] = defaultdict(set)
            for st in conn.execute(
                select(m.StepResult.__table__).execution_options(yield_per=1000)
            ):
                count += 1
                e = events.get(st.audit_seq) if st.audit_seq is not None else None
                h = step_hash(st)
                if e is None or e[0] not in STEP_KINDS or h not in (e[2].get("step_hashes") or ()):
                    issues.append(
                        BindingIssue(
                            "step_results",
                            st.id,
                            "the step result is not one its audit event recorded",
                            st.audit_seq,
                        )
                    )
                else:
                    by_seq[st.audit_seq].add(h)
            for seq, (kind, ref, d) in events.items():
                if (
                    kind in STEP_KINDS
                    and set(d.get("step_hashes") or ()) - by_seq[seq]
                    and (seq not in purged["step_results"])
                ):
                    issues.append(
                        BindingIssue(
                            "step_results",
                            str(ref),
                            f"a step result audit event {seq} recorded is missing",
                            seq,
                        )
                    )
            count += self._check_holds(conn, issues)
            count += _check_people(conn, people, issues)
            count += self._check_cases(conn, cases, purged["review_cases"], issues)
        first = min(issues, key=lambda i: (i.seq is not None, i.seq or 0)) if issues else None
        return ProofCheck(chain=chain, binding=first, records=count)

    def _check_holds(self, conn: Any, issues: list[BindingIssue]) -> int:
        """Legal holds both ways: every row one the chain recorded, every hold the chain
        recorded with its row (`bindings.read_holds`)."""
        lh = m.LegalHold.__table__
        holds, broken = read_holds(conn, self._audit.authentic)
        rows = {r.id: r.audit_seq for r in conn.execute(select(lh.c.id, lh.c.audit_seq))}
        for hold_id in broken:
            issues.append(
                BindingIssue(
                    "legal_holds",
                    hold_id,
                    "the hold is not one the audit chain recorded",
                    rows.get(hold_id),
                )
            )
        for hold in (h for hs in holds.values() for h in hs):
            if hold.hold_id not in rows:
                issues.append(
                    BindingIssue(
                        "legal_holds",
                        hold.hold_id,
                        "the hold the audit chain recorded has lost its record",
                    )
                )
        return len(rows)

    def _check_cases(
        self,
        conn: Any,
        events: dict[str | None, list[Any]],
        purged: set[int],
        issues: list[BindingIssue],
    ) -> int:
        """Every case's closing and decisions against its subject's events
        (`bindings.check_case`), and every case a closing names with its row."""
        rc, cd, ap = (m.ReviewCase.__table__, m.CaseDecision.__table__, m.Applicant.__table__)
        decisions: dict[str, list[Any]] = defaultdict(list)
        for d in conn.execute(select(cd).execution_options(yield_per=1000)):
            decisions[d.case_id].append(d)
        count = sum(len(ds) for ds in decisions.values())
        ids = set()
        for c in conn.execute(
            select(rc, ap.c.applicant_ref)
            .join(ap, ap.c.id == rc.c.applicant_id)
            .execution_options(yield_per=1000)
        ):
            count += 1
            ids.add(c.id)
            try:
                check_case(c, decisions.get(c.id, ()), events.get(c.applicant_ref, ()))
            except BindingError as exc:
                issues.append(BindingIssue(exc.table, exc.record, exc.rule, c.closed_seq))
        for subject_events in events.values():
            for e in subject_events:
                named = [e.detail.get("case_id")] + list(e.detail.get("case_hashes") or {})
                for case_id in named:
                    if (
                        case_id
                        and case_id not in ids
                        and closing_hash(e.detail, case_id) is not None
                        and e.seq not in purged
                    ):
                        issues.append(
                            BindingIssue(
                                "review_cases",
                                str(case_id),
                                f"the closed case audit event {e.seq} recorded is missing",
                                e.seq,
                            )
                        )
        return count

    def material(self, subject_ref: str, digests: tuple[str, ...] = ("sha256",)) -> Material:
        """A subject's bound records and the chain segments that carry their events to the
        checkpoints covering them. Call `AuditLog.checkpoint` first so that every event is
        covered. Records are checked (`applicants.check_decision` is the reader's check;
        here the hashes are recomputed and must equal those their events hold)."""
        out = Material()
        ce, ap, st = (m.ConsentEvent.__table__, m.Applicant.__table__, m.StepResult.__table__)
        with self._ctx.engine.connect() as conn:
            rows: list[tuple[str, tuple[str, ...], Any, int | None, str]] = []
            for r in conn.execute(
                select(ce)
                .where(ce.c.subject_ref == subject_ref)
                .order_by(ce.c.recorded_at, ce.c.id)
            ):
                rows.append(("consent_events", consent_fields(r), r, r.audit_seq, "record_hash"))
            a = conn.execute(select(ap).where(ap.c.applicant_ref == subject_ref)).first()
            if a is not None:
                rows.append(("applicants", DECISION_FIELDS, a, a.decision_seq, "decision_hash"))
                for s in conn.execute(
                    select(st).where(st.c.applicant_id == a.id).order_by(st.c.position)
                ):
                    rows.append(("step_results", STEP_FIELDS, s, s.audit_seq, "step_hashes"))
        for table, fields, r, seq, binding in rows:
            body = record_body(fields, r)
            out.records.append(
                {
                    "table": table,
                    "id": r.id,
                    "audit_seq": seq,
                    "binding": binding,
                    "body": body.decode("utf-8"),
                    "digests": {name: digest(name, body) for name in digests},
                }
            )
        # Every event of the subject goes in whole, not only those binding a record kept: a
        # withdrawal cannot be left out as a bare leaf hash (the signed index lists them);
        # and so does each `records.purged` event naming one, where a record was purged.
        own = {e.seq for e in self._audit.events(subject_ref=subject_ref)}
        bound = {r["audit_seq"] for r in out.records if r["audit_seq"] is not None}
        purges = {
            e.seq
            for e in self._audit.events(kind_prefix=RECORDS_PURGED)
            if set(e.detail.get("audit_seqs") or ()) & own
        }
        seqs = sorted(own | bound | purges)
        checkpoints = self._audit.checkpoints.load() if self._audit.checkpoints else []
        groups: dict[int, list[int]] = defaultdict(list)
        for seq in seqs:
            cover = next((cp.size for cp in checkpoints if cp.size >= seq), None)
            if cover is not None:
                groups[cover].append(seq)
        for size, wanted in sorted(groups.items()):
            start = min(wanted)
            before = self._audit.events(from_seq=start - 1, to_seq=start - 1)
            with self._ctx.engine.connect() as conn:
                head = conn.execute(select(m.AuditHead.base_seq, m.AuditHead.base_link)).first()
            if before:
                start_link = before[0].link
            elif head is not None and head.base_seq == start - 1 and head.base_link:
                start_link = head.base_link
            else:
                start_link = "0" * 64
            entries = []
            for e in self._audit.events(from_seq=start, to_seq=size):
                body = event_body(e.seq, e.at, e.kind, e.subject_ref, e.detail)
                if e.seq in wanted:
                    entries.append({"seq": e.seq, "body": body.decode("utf-8")})
                else:
                    entries.append({"seq": e.seq, "leaf": leaf_hash(body).hex()})
            out.segments.append(
                {
                    "checkpoint": f"{size:016d}.ckpt",
                    "size": size,
                    "start_seq": start,
                    "start_link": start_link,
                    "entries": entries,
                }
            )
        return out


def _check_people(
    conn: Any, events: dict[int, tuple[str, dict[str, Any]]], issues: list[BindingIssue]
) -> int:
    """Users and credentials against the events that bound them (`storage.people`): each
    row's hash in the event it names (a role raised, a password hash swapped, a credential
    inserted behind the chain), and no credential standing that the chain stopped (a
    `credential.revoked` event, or a change of its user that stopped every credential then
    held). The same rows stand for nobody at use; here they are named."""
    users = list(conn.execute(select(m.User.__table__)))
    names = {u.id: u.name for u in users}
    stopped_until: dict[str, int] = {}  # user name -> last change that stopped credentials
    revoked: set[str] = set()
    for seq, (kind, d) in events.items():
        if kind == "credential.revoked":
            revoked.add(str(d.get("credential")))
        elif d.get("credentials_revoked"):
            user = str(d.get("user"))
            stopped_until[user] = max(stopped_until.get(user, 0), seq)

    def bound(seq: int | None, key: str, value: str) -> bool:
        e = events.get(seq) if seq is not None else None
        return e is not None and e[1].get(key) == value

    for u in users:
        if not bound(u.audit_seq, "user_hash", user_hash(u)):
            issues.append(
                BindingIssue(
                    "users", u.id, "the user is not the one its audit event recorded", u.audit_seq
                )
            )
    creds = list(conn.execute(select(m.Credential.__table__)))
    for c in creds:
        if c.revoked_at is not None and c.audit_seq is None:
            continue  # stopped before bindings existed: it stands for nobody either way
        if not bound(c.audit_seq, "credential_hash", credential_hash(c)):
            issues.append(
                BindingIssue(
                    "credentials",
                    c.id,
                    "the credential is not one its audit event recorded",
                    c.audit_seq,
                )
            )
        elif c.revoked_at is None and (
            c.id in revoked or (c.audit_seq or 0) < stopped_until.get(names.get(c.user_id, ""), 0)
        ):
            issues.append(
                BindingIssue(
                    "credentials",
                    c.id,
                    "the credential stands again after the audit chain recorded it stopped",
                    c.audit_seq,
                )
            )
    return len(users) + len(creds)
