"""Reconciling a vendor's bill with the paid calls we recorded: pure, no I/O.

Each paid call carries an idempotency key (DOMAIN.md), which the vendor's statement lists
beside what it charged. Matching on it finds, per key:

- `billed_twice`: the vendor charged the same call on more than one line, whereas a retry
  under its key must be answered from the vendor's record, free;
- `billed_not_recorded`: charged, while our step holds no fee for it (the answer never came
  back: a timeout after the vendor had done the work, retries exhausted);
- `billed_unstored`: charged for a call we made (the gate's decision for it is in the audit
  chain) but never stored: its run died between the call and the storing, and no run
  resumed it;
- `billed_unknown`: charged under a key no call of ours carries;
- `fee_mismatch`: charged another amount than the answer said;
- `recorded_not_billed`: a fee we recorded in the period that the statement does not list.

Findings carry keys, request ids, refs and amounts: never a personal value.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime

FINDING_KINDS = (
    "billed_twice",
    "billed_not_recorded",
    "billed_unstored",
    "billed_unknown",
    "fee_mismatch",
    "recorded_not_billed",
)


@dataclass(frozen=True)
class BilledCall:
    """One line of a vendor's statement."""

    line_no: int
    billed_at: datetime
    request_id: str
    idempotency_key: str
    endpoint: str
    fee_cents: int


@dataclass(frozen=True)
class RecordedCall:
    """One stored step that called a vendor, as the statement is compared with it."""

    idempotency_key: str
    step: str
    status: str
    reason: str
    fee_cents: int
    vendor_request_id: str | None
    applicant_ref: str
    run_id: str
    recorded_at: datetime


@dataclass(frozen=True)
class Finding:
    kind: str
    idempotency_key: str
    billed_cents: int = 0
    recorded_cents: int = 0
    step: str | None = None
    applicant_ref: str | None = None
    run_id: str | None = None
    request_ids: tuple[str, ...] = ()
    lines: tuple[int, ...] = ()  # statement lines

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Reconciliation:
    billed_calls: int = 0
    billed_cents: int = 0
    recorded_calls: int = 0
    recorded_cents: int = 0
    matched_calls: int = 0
    matched_cents: int = 0
    findings: list[Finding] = field(default_factory=list)
    # Lines of a real vendor's bill for calls of ours that were sent and never answered:
    # explained (named by applicant, step and decision), not discrepancies.
    in_doubt: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(FINDING_KINDS, 0)
        for f in self.findings:
            out[f.kind] += 1
        out["billed_in_doubt"] = len(self.in_doubt)
        return out

    def as_dict(self) -> dict[str, object]:
        return {
            "clean": self.clean,
            "billed_calls": self.billed_calls,
            "billed_cents": self.billed_cents,
            "recorded_calls": self.recorded_calls,
            "recorded_cents": self.recorded_cents,
            "matched_calls": self.matched_calls,
            "matched_cents": self.matched_cents,
            "counts": self.counts(),
            "findings": [f.as_dict() for f in self.findings],
            "billed_in_doubt": [f.as_dict() for f in self.in_doubt],
        }


def reconcile(
    billed: Iterable[BilledCall],
    recorded: Iterable[RecordedCall],
    *,
    period: tuple[datetime, datetime] | None = None,
    made: Mapping[str, tuple[str, str]] | None = None,
) -> Reconciliation:
    """Compare a statement's lines with our recorded calls, key by key.

    `recorded` may hold calls outside the statement's period (found by the statement's keys);
    only those recorded within `period` (start inclusive, end exclusive), when given, can be
    `recorded_not_billed`. `made` maps the keys of calls the gate allowed to their
    (applicant ref, step), so that one never stored is named for what it is."""
    made = made or {}
    lines_of: dict[str, list[BilledCall]] = defaultdict(list)
    for b in billed:
        lines_of[b.idempotency_key].append(b)
    ours: dict[str, RecordedCall] = {}
    for r in recorded:
        ours.setdefault(r.idempotency_key, r)
    result = Reconciliation()
    for key, lines in sorted(lines_of.items()):
        charged = sum(b.fee_cents for b in lines)
        result.billed_calls += len(lines)
        result.billed_cents += charged
        mine = ours.get(key)
        if len(lines) > 1:
            kind = "billed_twice"
        elif mine is None:
            kind = "billed_unstored" if key in made else "billed_unknown"
        elif mine.fee_cents == 0:
            kind = "billed_not_recorded"
        elif mine.fee_cents != charged:
            kind = "fee_mismatch"
        else:
            result.matched_calls += 1
            result.matched_cents += charged
            continue
        result.findings.append(
            Finding(
                kind,
                key,
                billed_cents=charged,
                recorded_cents=mine.fee_cents if mine else 0,
                step=mine.step if mine else made.get(key, (None, None))[1],
                applicant_ref=mine.applicant_ref if mine else made.get(key, (None, None))[0],
                run_id=mine.run_id if mine else None,
                request_ids=tuple(sorted({b.request_id for b in lines})),
                lines=tuple(b.line_no for b in lines),
            )
        )
    for key, mine in sorted(ours.items()):
        in_period = period is None or period[0] <= mine.recorded_at < period[1]
        if mine.fee_cents and in_period:
            result.recorded_calls += 1
            result.recorded_cents += mine.fee_cents
            if key not in lines_of:
                result.findings.append(
                    Finding(
                        "recorded_not_billed",
                        key,
                        recorded_cents=mine.fee_cents,
                        step=mine.step,
                        applicant_ref=mine.applicant_ref,
                        run_id=mine.run_id,
                        request_ids=(mine.vendor_request_id,) if mine.vendor_request_id else (),
                    )
                )
    return result


# -- A real vendor's bill (Tencent Cloud, Alibaba Cloud) ---------------------------------------
#
# A real vendor takes no idempotency key: its bill lists each billed call by the vendor's own
# request id, which our answer carried. A call sent and never answered (a timeout, a run that
# died with it in flight) is billed all the same, under a request id we never saw: such a
# line is matched to one of our calls in doubt of the same action (the earliest not matched
# yet, decided before the line was billed) and named `billed_in_doubt`, an explained cost, not
# a discrepancy. Findings and names carry ids, refs, steps and amounts: no personal value.


@dataclass(frozen=True)
class AnsweredCall:
    """One answered call of ours at a real vendor (from the gate's `step.completed` record)."""

    request_id: str
    action: str
    step: str
    applicant_ref: str
    decision_id: str
    fee_cents: int
    at: datetime


@dataclass(frozen=True)
class DoubtfulCall:
    """A call of ours that was sent and never answered (its decision, step and action)."""

    action: str
    step: str
    applicant_ref: str
    decision_id: str
    at: datetime


@dataclass(frozen=True)
class BillLine:
    line_no: int
    billed_at: datetime
    request_id: str
    action: str
    fee_cents: int


def reconcile_bill(
    lines: Iterable[BillLine],
    answered: Iterable[AnsweredCall],
    doubtful: Iterable[DoubtfulCall],
    *,
    period: tuple[datetime, datetime] | None = None,
) -> Reconciliation:
    """Compare a real vendor's bill with our answered calls by request id; lines under ids
    we never saw go to our calls in doubt (`billed_in_doubt`, in `result.in_doubt`), then
    `billed_unknown`. Answered billed calls in `period` missing from the bill are
    `recorded_not_billed`."""
    by_id: dict[str, list[BillLine]] = defaultdict(list)
    for line in lines:
        by_id[line.request_id].append(line)
    ours: dict[str, AnsweredCall] = {}
    for call in answered:
        ours.setdefault(call.request_id, call)
    waiting: dict[str, list[DoubtfulCall]] = defaultdict(list)
    for d in sorted(doubtful, key=lambda d: d.at):
        waiting[d.action].append(d)
    result = Reconciliation()
    unknown: list[BillLine] = []
    for request_id, billed in sorted(by_id.items()):
        charged = sum(b.fee_cents for b in billed)
        result.billed_calls += len(billed)
        result.billed_cents += charged
        mine = ours.get(request_id)
        if mine is None:
            unknown.extend(billed)
            continue
        kind = (
            "billed_twice"
            if len(billed) > 1
            else "billed_not_recorded"
            if mine.fee_cents == 0
            else "fee_mismatch"
            if mine.fee_cents != charged
            else None
        )
        if kind is None:
            result.matched_calls += 1
            result.matched_cents += charged
            continue
        result.findings.append(
            Finding(
                kind,
                mine.decision_id,
                billed_cents=charged,
                recorded_cents=mine.fee_cents,
                step=mine.step,
                applicant_ref=mine.applicant_ref,
                request_ids=(request_id,),
                lines=tuple(b.line_no for b in billed),
            )
        )
    for line in sorted(unknown, key=lambda b: b.billed_at):
        queue = waiting.get(line.action, [])
        pick = next((i for i, d in enumerate(queue) if d.at <= line.billed_at), None)
        if pick is None:
            result.findings.append(
                Finding(
                    "billed_unknown",
                    "",
                    billed_cents=line.fee_cents,
                    request_ids=(line.request_id,),
                    lines=(line.line_no,),
                )
            )
            continue
        d = queue.pop(pick)
        result.in_doubt.append(
            Finding(
                "billed_in_doubt",
                d.decision_id,
                billed_cents=line.fee_cents,
                step=d.step,
                applicant_ref=d.applicant_ref,
                request_ids=(line.request_id,),
                lines=(line.line_no,),
            )
        )
    for request_id, mine in sorted(ours.items()):
        in_period = period is None or period[0] <= mine.at < period[1]
        if mine.fee_cents and in_period:
            result.recorded_calls += 1
            result.recorded_cents += mine.fee_cents
            if request_id not in by_id:
                result.findings.append(
                    Finding(
                        "recorded_not_billed",
                        mine.decision_id,
                        recorded_cents=mine.fee_cents,
                        step=mine.step,
                        applicant_ref=mine.applicant_ref,
                        request_ids=(request_id,),
                    )
                )
    return result
