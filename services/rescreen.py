"""The whole-book re-screen: every applicant with a live `ongoing_monitoring` consent covering
`court_records`, matched against the licensed list copy in use, new listings and delistings
taken to the workbench.

A run (`plan`) takes each source's version in use once and cuts the applicants into ranges
(chunks). A chunk (`screen_chunk`), wherever it runs:

1. reads the range's applicants (refs and standing only), and their grants in bulk, a
   slice at a time (each grant checked against its authentic chain event); decides each by
   `policies.consent.authorize` and records the slice's decisions as one `consent.decided`
   event (`decided_event`: who was allowed on which grants, the refused counted by reason
   with a digest of who they were, the chain size the grants were read at), re-deciding the
   slice when the ledger of a subject allowed moved in between. No consent, no screening:
   the subject is counted as skipped and never decrypted. One event per slice rather than
   per person: a nightly run would otherwise append a million decisions a night, and each
   subject's pile of them would slow every later read of their ledger; a refused subject is
   not named at all (monitoring those who said no, even in the audit trail, is what the
   refusal declines), yet every decision can be re-derived from the chain.
2. decrypts the allowed ones only (`ApplicantRepository.people`, one read event per slice
   naming them, with the purpose and the run), computes the key of each mask shape in the
   copy from the full ID number in memory (never written), and looks the keys up
   (`storage.court_copy`): an exact index lookup per key. The names of the few rows found
   are compared (`policies.name_match`, surname readings, orders, scripts) and graded
   (`policies.court_list.verdict`): `confirmed`, `probable`, `possible`. None of them is an
   adverse decision: each goes to a person.
3. compares what it found with the applicant's standing matches (by the entry's blind
   index): a new one is recorded sealed and opens or joins the applicant's case (reason
   `COURT_NEW_LISTING`) unless the (applicant, case number) pair is whitelisted; one no
   longer found ends (`delisted` if the entry left the copy, else `cleared`), and the case it
   rested on is told (reason `COURT_DELISTED`, its evidence version raised, a pending
   four-eyes decision voided).

After every chunk, `delistings` ends the standing matches of entries the copy delisted since
the last finished run for everyone not screened (no consent now, restricted): by the entry's
blind index, without decrypting anyone. A copy older than the policy allows stops the run
before it starts (`Unavailable`, the source and its age). The report is counts only.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from policies.cases import COURT_DELISTED, COURT_NEW_LISTING
from policies.consent import authorize
from policies.court_list import VERDICTS, CourtListPolicy, shape_of, verdict
from policies.name_match import compare, form
from policies.notices import Notice
from services.access import AccessControl
from services.context import Actor
from services.errors import Unavailable
from storage.audit import PendingEvent
from storage.court_copy import Candidate, CopyGoneError, LiveCopy
from storage.court_matches import MatchRow, NewMatch
from storage.store import Store

PURPOSE = "ongoing_monitoring"
SCOPES = frozenset({"court_records"})
STEP = "court_rescreen"
# Who the re-screen acts as (it runs under `run`).
RESCREEN_ACTOR = Actor(name="rescreen flow", role="operator")
# Applicants decrypted at a time: their keys fit the key ring's cache (two entries each).
SLICE = 1000
# Applicants per chunk, the unit a worker takes.
CHUNK = 20_000
COUNTS = (
    "applicants",
    "screened",
    "skipped_consent",
    "unavailable",
    "candidates",
    "new",
    "whitelisted",
    "delisted",
    "cleared",
    "cases",
    *(f"verdict_{v}" for v in VERDICTS),
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RescreenPlan(_Model):
    run_id: str
    versions: dict[str, int]
    chunks: int
    applicants_per_chunk: int


class ChunkCounts(_Model):
    """What screening a chunk (or ending the delisted entries' matches) did: applicants,
    screened, skipped for consent (`skipped` by reason), erased or restricted
    (`unavailable`), matches standing per verdict, new, whitelisted, delisted, cleared, cases
    opened or joined; no personal value. `stored()` is the chunk's report as the run keeps
    it (one flat map, `skipped_<reason>` beside the counts), `from_stored` reads it back."""

    applicants: int = 0
    screened: int = 0
    skipped_consent: int = 0
    unavailable: int = 0
    candidates: int = 0
    new: int = 0
    whitelisted: int = 0
    delisted: int = 0
    cleared: int = 0
    cases: int = 0
    verdict_confirmed: int = 0
    verdict_probable: int = 0
    verdict_possible: int = 0
    skipped: dict[str, int] = {}

    def stored(self) -> dict[str, int]:
        counts = self.model_dump(exclude={"skipped"})
        return {**counts, **{f"skipped_{k}": v for k, v in self.skipped.items()}}

    @classmethod
    def from_stored(cls, report: Mapping[str, Any]) -> ChunkCounts:
        counts = {k: int(v) for k, v in report.items() if k in COUNTS}
        skipped = {
            k.removeprefix("skipped_"): int(v)
            for k, v in report.items()
            if k.startswith("skipped_") and k not in COUNTS
        }
        return cls(**counts, skipped=skipped)


class RescreenReport(_Model):
    """A run's end: counts per verdict (of the matches found for the applicants screened),
    skipped for consent (by reason), new listings, delistings, cases opened or joined; no
    personal value."""

    run_id: str
    status: str
    stop_reason: str | None
    versions: dict[str, int]
    counts: dict[str, int]
    skipped: dict[str, int]
    seconds: float


class RescreenStopped(Unavailable):
    """A run stopped before it began (no copy, or one too old): the run recorded as such."""

    def __init__(self, field: str, rule: str, run_id: str) -> None:
        super().__init__(field, rule)
        self.run_id = run_id


def denied_digest(denied: Mapping[str, str]) -> str:
    """SHA-256 over the refused subjects of a slice and their reasons (sorted `ref<US>reason`
    lines): names no one, yet anyone who replays the ledger up to the decision's chain size
    can show who was refused and why."""
    text = "\n".join(f"{ref}\x1f{denied[ref]}" for ref in sorted(denied))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def decided_event(
    run_id: str,
    read_at: int,
    now: datetime,
    allowed: Mapping[str, tuple[str, tuple[str, ...]]],
    denied: Mapping[str, str],
) -> PendingEvent:
    """The consent decisions of one slice as one audit event: the subjects allowed with the
    grants each decision rests on (they are read next, and named again by the read), the
    refused counted by reason with `denied_digest`, the chain size the grants were read at
    and the decision's time: every decision can be re-derived from the chain."""
    return (
        "consent.decided",
        None,
        {
            "decision_id": str(uuid.uuid4()),
            "step": STEP,
            "purpose": PURPOSE,
            "scopes": sorted(SCOPES),
            "run_id": run_id,
            "read_at": read_at,
            "decided_at": now.isoformat(),
            "allowed": {ref: list(allowed[ref][1]) for ref in sorted(allowed)},
            "denied": dict(sorted(Counter(denied.values()).items())),
            "denied_sha256": denied_digest(denied),
        },
    )


def _empty() -> Counter[str]:
    return Counter(dict.fromkeys(COUNTS, 0))


class RescreenService:
    """See the module docstring."""

    def __init__(
        self,
        store: Store,
        control: AccessControl,
        policy: CourtListPolicy,
        notices: Mapping[str, Notice],
    ) -> None:
        self.store = store
        self.control = control
        self.policy = policy
        self.notices = notices

    # --- a run ---------------------------------------------------------------------------

    def copies(self, now: datetime | None = None) -> list[LiveCopy]:
        """The copy in use, each source's version: `Unavailable` when there is none, or when
        one is older than the policy allows (the source, its version and age named)."""
        now = now or self.store.clock()
        copies = self.store.court_copy.live()
        if not copies:
            raise Unavailable("list", "no list copy is imported: `idv list import` one first")
        for c in copies:
            if self.policy.stale(c.as_of, now):
                hours = (now - c.as_of).total_seconds() / 3600
                raise Unavailable(
                    "list",
                    f"{c.source} version {c.version} is {hours:.0f} h old, over the "
                    f"policy's {self.policy.max_age_hours} h: import a fresher copy "
                    "before re-screening",
                )
        return copies

    def plan(
        self, *, actor: Actor, chunk_size: int = CHUNK, flow_run_id: str | None = None
    ) -> RescreenPlan:
        """Open a run on the copy in use (refused when it is missing or stale: the refusal is
        recorded as a stopped run), with the applicants cut into chunks."""
        self.control.require(actor, "run", operation="rescreen")
        run_id = self.store.runs.start(
            batch_name="rescreen", batch_sha256=None, flow_run_id=flow_run_id
        )
        try:
            copies = self.copies()
        except Unavailable as exc:
            self.store.court_matches.start_run(run_id, versions={}, chunks=[])
            self.store.court_matches.finish_run(
                run_id, status="stopped", counts={}, stop_reason=exc.rule
            )
            raise RescreenStopped(exc.field, exc.rule, run_id) from None
        ranges = self.store.court_matches.applicant_ranges(max(1, chunk_size))
        versions = {c.source: c.version for c in copies}
        self.store.court_matches.start_run(run_id, versions=versions, chunks=ranges)
        return RescreenPlan(
            run_id=run_id, versions=versions, chunks=len(ranges), applicants_per_chunk=chunk_size
        )

    def _run_copies(self, run: dict[str, Any]) -> list[LiveCopy]:
        out = []
        for source, version in sorted(run["versions"].items()):
            copy = self.store.court_copy.version(source, version)
            if copy is None:
                raise Unavailable(
                    "list", f"{source} version {version} is no longer kept: run again"
                )
            out.append(copy)
        return out

    # --- a chunk -------------------------------------------------------------------------

    def screen_chunk(self, run_id: str, index: int) -> ChunkCounts:
        """Screen chunk `index` of the run (see the module docstring); its counts."""
        run = self.store.court_matches.run(run_id)
        if run is None:
            raise Unavailable("run_id", "no such re-screen run")
        after, upto = run["chunks"][index]
        copies = self._run_copies(run)
        counts = _empty()
        skipped: Counter[str] = Counter()
        people = self.store.court_matches.population(after, upto)
        counts["applicants"] = len(people)
        available = [(i, r) for i, r, standing in people if standing == "available"]
        counts["unavailable"] = len(people) - len(available)
        for at in range(0, len(available), SLICE):
            part = available[at : at + SLICE]
            allowed = self._decide(run_id, part, skipped)
            counts["skipped_consent"] += len(part) - len(allowed)
            if allowed:
                self._screen(run_id, allowed, copies, counts)
        return ChunkCounts(**counts, skipped=dict(skipped))

    def _decide(
        self, run_id: str, part: list[tuple[str, str]], skipped: Counter[str]
    ) -> dict[str, tuple[str, tuple[str, ...]]]:
        """The applicants of `part` whose consent covers the re-screen now, ref -> (row id,
        consent ids); the slice's decisions recorded as one `consent.decided` event."""
        ids = dict((r, i) for i, r in part)
        for _ in range(3):
            now = self.store.clock()
            read_at, grants = self.store.court_matches.grants(list(ids))
            allowed: dict[str, tuple[str, tuple[str, ...]]] = {}
            denied: dict[str, str] = {}
            for ref in ids:
                d = authorize(
                    grants.get(ref, []),
                    notices=self.notices,
                    subject_ref=ref,
                    purpose=PURPOSE,
                    scopes=SCOPES,
                    step=STEP,
                    now=now,
                )
                if d.allowed:
                    allowed[ref] = (ids[ref], d.consent_ids)
                else:
                    denied[ref] = d.reason
            event = decided_event(run_id, read_at, now, allowed, denied)
            moved = self.store.court_matches.record_decisions(
                [event], allowed=list(allowed), read_at=read_at
            )
            if not moved:
                skipped.update(Counter(denied.values()))
                return allowed
        raise Unavailable("consent", "the consent ledger kept changing under the re-screen")

    def _screen(
        self,
        run_id: str,
        allowed: dict[str, tuple[str, tuple[str, ...]]],
        copies: list[LiveCopy],
        counts: Counter[str],
    ) -> None:
        refs = sorted(allowed)
        self.store.keyring.prefetch(refs)
        people = self.store.applicants.people(
            refs,
            actor=RESCREEN_ACTOR.name,
            purpose=PURPOSE,
            context={"run_id": run_id, "use": "court_rescreen"},
        )
        counts["screened"] += len(people)
        # Keys in memory only: the visible digits of each applicant's ID in each shape.
        found: dict[str, list[tuple[LiveCopy, Candidate, str, str]]] = defaultdict(list)
        for copy in copies:
            shapes = [shape_of(label) for label in copy.shapes]
            by_key: dict[str, list[str]] = defaultdict(list)
            for ref, person in people.items():
                number = person.id_number.get_secret_value()
                for shape in shapes:
                    if len(number) == shape.length:
                        by_key[shape.key(number)].append(ref)
            try:
                rows = self.store.court_copy.candidates(copy, by_key)
            except CopyGoneError as exc:
                raise Unavailable("list", str(exc)) from None
            counts["candidates"] += len(rows)
            for row in rows:
                theirs = form(row.iname)
                shape = shape_of(row.shape)
                for ref in by_key[row.match_key]:
                    kind = compare(form(people[ref].name.get_secret_value()), theirs)
                    graded = verdict(self.policy, shape, kind)
                    if graded is not None and kind is not None:
                        found[ref].append((copy, row, graded, kind))
        standing = self.store.court_matches.standing([allowed[r][0] for r in refs])
        for ref in refs:
            if ref not in people:
                continue
            self._settle(
                run_id,
                ref,
                allowed[ref][0],
                found.get(ref, []),
                standing.get(allowed[ref][0], []),
                copies,
                counts,
            )

    def _settle(
        self,
        run_id: str,
        ref: str,
        applicant_id: str,
        found: list[tuple[LiveCopy, Candidate, str, str]],
        standing: list[MatchRow],
        copies: list[LiveCopy],
        counts: Counter[str],
    ) -> None:
        index = self.store.court_matches.entry_index
        now_keys = {index(c.source, row.entry_key): (c, row, v, k) for c, row, v, k in found}
        for _, _, graded, _ in now_keys.values():
            counts[f"verdict_{graded}"] += 1
        held = {m.entry_bidx: m for m in standing}
        fresh = [v for b, v in now_keys.items() if b not in held]
        gone = [m for b, m in held.items() if b not in now_keys]
        if fresh:
            cleared = {w.case_number for w in self.store.cases.whitelisted(ref)}
            new = [
                NewMatch(
                    applicant_id=applicant_id,
                    applicant_ref=ref,
                    entry_bidx=index(c.source, row.entry_key),
                    status="whitelisted" if row.case_code in cleared else "active",
                    detail={
                        "source": c.source,
                        "version": c.version,
                        "entry_key": row.entry_key,
                        "case_number": row.case_code,
                        "court": row.court_name,
                        "shape": row.shape,
                        "name_match": kind,
                        "verdict": graded,
                    },
                )
                for c, row, graded, kind in fresh
            ]
            ids = self.store.court_matches.add(new, run_id=run_id)
            active = [i for i, n in zip(ids, new, strict=True) if n.status == "active"]
            counts["new"] += len(active)
            counts["whitelisted"] += len(ids) - len(active)
            if active:
                case_id = self._case(ref, COURT_NEW_LISTING, cause="court_new_listing")
                if case_id is not None:
                    self.store.court_matches.set_case(active, case_id)
                    counts["cases"] += 1
        if gone:
            delisted, cleared_now = self._why_gone(gone, copies)
            self._end(run_id, delisted, "delisted", counts)
            self._end(run_id, cleared_now, "cleared", counts)

    def _why_gone(
        self, gone: list[MatchRow], copies: list[LiveCopy]
    ) -> tuple[list[MatchRow], list[MatchRow]]:
        """Which matches no longer found left the copy (delisted) and which no longer match
        (cleared): the sealed detail names the entry (the applicant is being screened)."""
        delisted: list[MatchRow] = []
        cleared: list[MatchRow] = []
        by_source = {c.source: c for c in copies}
        for m in gone:
            detail = self.store.court_matches.detail(m.match_id) or {}
            copy = by_source.get(str(detail.get("source")))
            key = str(detail.get("entry_key", ""))
            there = copy is not None and key in self.store.court_copy.present(copy, [key])
            (cleared if there else delisted).append(m)
        return delisted, cleared

    def _end(self, run_id: str, ended: list[MatchRow], cause: str, counts: Counter[str]) -> None:
        if not ended:
            return
        self.store.court_matches.end(ended, cause=cause, run_id=run_id)
        counts[cause] += len(ended)
        told: set[tuple[str, str]] = set()
        for m in ended:
            if (
                m.case_id is not None
                and m.status == "active"
                and (m.applicant_ref, m.case_id) not in told
            ):
                told.add((m.applicant_ref, m.case_id))
                if self._case(
                    m.applicant_ref, COURT_DELISTED, cause=f"court_{cause}", rests_on=m.case_id
                ):
                    counts["cases"] += 1

    def _case(
        self, ref: str, reason: str, *, cause: str, rests_on: str | None = None
    ) -> str | None:
        """Open the applicant's case with `reason`, or add it to the case not yet closed;
        a case that was open already has its evidence changed (a pending four-eyes decision
        voided). `rests_on`: the case a match rested on, told of its delisting."""
        before = self.store.cases.case_of(ref)
        due = self.store.context.cases.due([reason], self.store.clock())
        case_id = self.store.cases.case_for(ref, reason, due=due)
        # A closed case the match rested on stays as it was: the delisting opened a new one,
        # for a person to look again.
        if case_id is not None and before is not None and before.case_id == case_id:
            self.store.cases.touch_evidence(case_id, cause=cause)
        del rests_on
        return case_id

    # --- after every chunk -----------------------------------------------------------------

    def delistings(self, run_id: str) -> ChunkCounts:
        """End the standing matches of entries the copy delisted since the last finished run,
        for everyone this run did not screen, by blind index (no decryption)."""
        run = self.store.court_matches.run(run_id)
        if run is None:
            raise Unavailable("run_id", "no such re-screen run")
        last = self.store.court_matches.last_versions()
        counts = _empty()
        index = self.store.court_matches.entry_index
        for source, version in sorted(run["versions"].items()):
            gone = self.store.court_copy.changed(source, last.get(source, 0), version, "delisted")
            resting = self.store.court_matches.resting_on(index(source, k) for k in gone)
            self._end(run_id, resting, "delisted", counts)
        return ChunkCounts.model_validate(counts)

    def finish(
        self,
        run_id: str,
        chunk_counts: list[ChunkCounts],
        *,
        started: float,
        status: str = "finished",
        stop_reason: str | None = None,
    ) -> RescreenReport:
        """Close the run with the sum of its chunks' counts (and the delistings')."""
        total: Counter[str] = _empty()
        for c in chunk_counts:
            total.update(c.stored())
        # `skipped_consent` is the total; `skipped_<reason>` its parts.
        reasons = {k for k in total if k.startswith("skipped_") and k != "skipped_consent"}
        skipped = {k.removeprefix("skipped_"): int(total[k]) for k in sorted(reasons)}
        counts = {k: int(v) for k, v in total.items() if k not in reasons}
        run = self.store.court_matches.run(run_id) or {"versions": {}}
        self.store.court_matches.finish_run(
            run_id, status=status, counts=dict(total), stop_reason=stop_reason
        )
        return RescreenReport(
            run_id=run_id,
            status=status,
            stop_reason=stop_reason,
            versions=dict(run["versions"]),
            counts=counts,
            skipped=skipped,
            seconds=round(time.perf_counter() - started, 3),
        )
