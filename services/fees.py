"""Vendor fees: a vendor's billing statement reconciled with the paid calls idv recorded.

The period arithmetic, the choice of statement lines (only the named vendor's endpoints),
the matching (`policies.billing.reconcile`) and the audit record live here; a surface reads
the file and renders the result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from intake.bills import VendorBillLine
from intake.statement import StatementError, StatementRefusal, read_statement_text
from policies.billing import (
    AnsweredCall,
    BilledCall,
    BillLine,
    DoubtfulCall,
    Reconciliation,
    reconcile,
    reconcile_bill,
)
from policies.vendors import VendorContracts
from services.context import Actor
from services.errors import InvalidInput
from storage.store import Store
from verifiers.face import FACE_APIS
from verifiers.face import STEP as FACE_STEP
from verifiers.registry import LICENSED_VERIFIERS, vendor_apis, vendor_steps
from verifiers.vendor import call_key


def _read_bill(protocol: str, text: str) -> list[VendorBillLine | StatementRefusal]:
    if protocol == "tencent":
        from intake.tencent_bill import read_tencent_bill

        return read_tencent_bill(text)
    from intake.aliyun_bill import read_aliyun_bill

    return read_aliyun_bill(text)


@dataclass(frozen=True)
class FeeReconciliation:
    first: date
    last: date
    vendor: str | None
    result: Reconciliation
    unreadable: list[StatementRefusal]
    other_vendors_lines: int  # statement lines of other vendors' endpoints, left out

    @property
    def clean(self) -> bool:
        return self.result.clean and not self.unreadable

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": {"from": self.first.isoformat(), "to": self.last.isoformat()},
            "vendor": self.vendor,
            **self.result.as_dict(),
            "unreadable_lines": [
                {"line": r.line_no, "column": r.column, "rule": r.rule} for r in self.unreadable
            ],
            "other_vendors_lines": self.other_vendors_lines,
            "clean": self.clean,
        }


class FeeService:
    def __init__(self, store: Store, contracts: VendorContracts) -> None:
        self.store = store
        self.contracts = contracts

    def _made(
        self, period: tuple[datetime, datetime], keys: set[str]
    ) -> dict[str, tuple[str, str]]:
        """The calls the gate allowed around the period (a day either side: a call is billed
        after it is allowed), by their idempotency key: (applicant ref, step)."""
        made: dict[str, tuple[str, str]] = {}
        for e in self.store.audit.events(
            kind_prefix="consent.allowed",
            since=period[0] - timedelta(days=1),
            until=period[1] + timedelta(days=1),
        ):
            step, ref = e.detail.get("step"), e.detail.get("call_ref")
            if isinstance(step, str) and isinstance(ref, str) and e.subject_ref:
                key = call_key(step, ref)
                if key in keys:
                    made[key] = (e.subject_ref, step)
        return made

    def reconcile(
        self,
        statement: bytes,
        *,
        vendor: str | None = None,
        start: date | None = None,
        end: date | None = None,
        actor: Actor,
    ) -> FeeReconciliation:
        """Compare the statement with our paid calls, key by key, over `start`..`end` (UTC
        days, both included; by default the statement's first and last billed days). With
        `vendor`, only that vendor's endpoints are compared. A real vendor's bill (Tencent
        Cloud, Alibaba Cloud: `vendor` names it) is matched by the vendor's request ids, and
        its lines for calls of ours in doubt are named `billed_in_doubt`. Recorded in the
        audit chain."""
        names = sorted(self.contracts.vendors)
        if vendor is not None and vendor not in self.contracts.vendors:
            raise InvalidInput("vendor", f"must be one of {', '.join(names)}")
        try:
            text = statement.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidInput("statement", "is not UTF-8 text") from None
        protocol = self.contracts.protocol(vendor) if vendor is not None else "generic"
        if vendor is not None and protocol in ("tencent", "aliyun"):
            return self._reconcile_bill(
                statement, text, vendor, str(protocol), start=start, end=end, actor=actor
            )
        try:
            read = read_statement_text(text)
        except StatementError as exc:
            raise InvalidInput("statement", str(exc).removeprefix("statement: ")) from None
        billed = [x for x in read if isinstance(x, BilledCall)]
        unreadable = [x for x in read if isinstance(x, StatementRefusal)]
        other_lines = 0
        if vendor is not None:
            paths = vendor_apis(self.contracts).get(vendor, frozenset())
            other_lines = sum(1 for b in billed if b.endpoint not in paths)
            billed = [b for b in billed if b.endpoint in paths]
        days = sorted(b.billed_at.astimezone(UTC).date() for b in billed)
        if (start is None or end is None) and not days:
            raise InvalidInput(
                "statement", "has no billed call; give --from and --to to look for unbilled ones"
            )
        first = start or days[0]
        last = end or days[-1]
        if last < first:
            raise InvalidInput("to", "must not be before --from")
        period = (
            datetime.combine(first, datetime.min.time(), UTC),
            datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC),
        )
        recorded = self.store.runs.paid_calls(
            start=period[0],
            end=period[1],
            keys=[b.idempotency_key for b in billed],
            steps=vendor_steps(self.contracts, vendor),
        )
        result = reconcile(
            billed,
            recorded,
            period=period,
            made=self._made(period, {b.idempotency_key for b in billed}),
        )
        self._record(statement, vendor, first, last, result, len(unreadable), actor)
        return FeeReconciliation(
            first=first,
            last=last,
            vendor=vendor,
            result=result,
            unreadable=unreadable,
            other_vendors_lines=other_lines,
        )

    def _record(
        self,
        statement: bytes,
        vendor: str | None,
        first: date,
        last: date,
        result: Reconciliation,
        unreadable: int,
        actor: Actor,
    ) -> None:
        self.store.audit.record(
            "fees.reconciled",
            None,
            {
                "statement_sha256": hashlib.sha256(statement).hexdigest(),
                "vendor": vendor,
                "from": first.isoformat(),
                "to": last.isoformat(),
                "counts": result.counts(),
                "unreadable_lines": unreadable,
                "billed_cents": result.billed_cents,
                "recorded_cents": result.recorded_cents,
                "actor": actor.name,
            },
        )

    def _reconcile_bill(
        self,
        statement: bytes,
        text: str,
        vendor: str,
        protocol: str,
        *,
        start: date | None,
        end: date | None,
        actor: Actor,
    ) -> FeeReconciliation:
        try:
            read = _read_bill(protocol, text)
        except StatementError as exc:
            raise InvalidInput("statement", str(exc).removeprefix("statement: ")) from None
        lines = [x for x in read if isinstance(x, VendorBillLine)]
        unreadable = [x for x in read if isinstance(x, StatementRefusal)]
        days = sorted(b.billed_at.astimezone(UTC).date() for b in lines)
        if (start is None or end is None) and not days:
            raise InvalidInput(
                "statement", "has no billed call; give --from and --to to look for unbilled ones"
            )
        first = start or days[0]
        last = end or days[-1]
        if last < first:
            raise InvalidInput("to", "must not be before --from")
        period = (
            datetime.combine(first, datetime.min.time(), UTC),
            datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC),
        )
        answered, doubtful = self.vendor_calls(vendor, protocol, period)
        result = reconcile_bill(
            [BillLine(b.line_no, b.billed_at, b.request_id, b.action, b.fee_cents) for b in lines],
            answered,
            doubtful,
            period=period,
        )
        self._record(statement, vendor, first, last, result, len(unreadable), actor)
        return FeeReconciliation(
            first=first,
            last=last,
            vendor=vendor,
            result=result,
            unreadable=unreadable,
            other_vendors_lines=0,
        )

    def vendor_calls(
        self, vendor: str, protocol: str, period: tuple[datetime, datetime]
    ) -> tuple[list[AnsweredCall], list[DoubtfulCall]]:
        """Our calls at a real vendor around `period` (a day either side), from the audit
        chain: each answered call (`step.completed`'s `calls`), and each call sent and never
        answered: an attempt the answer counts as in doubt, or a decision allowed for a
        licensed step whose `step.completed` never came (its run died with it in flight).
        Each face flow started at the vendor (`face_calls`) is one answered call too, under
        the token the vendor bills it by."""
        since, until = period[0] - timedelta(days=1), period[1] + timedelta(days=1)
        actions = {
            cls.name: cls.actions[protocol].name
            for cls in LICENSED_VERIFIERS
            if protocol in cls.actions
            and (route := self.contracts.route(cls.name)) is not None
            and vendor in route.vendors
        }
        answered: list[AnsweredCall] = []
        doubtful: list[DoubtfulCall] = []
        completed: set[str] = set()
        for e in self.store.audit.events(kind_prefix="step.completed", since=since, until=until):
            decision = str(e.detail.get("decision_id") or "")
            completed.add(decision)
            step = str(e.detail.get("step") or "")
            for call in e.detail.get("calls") or ():
                if not isinstance(call, dict) or call.get("vendor") != vendor:
                    continue
                action = str(call.get("action") or "")
                for _ in range(int(call.get("in_doubt") or 0)):
                    doubtful.append(DoubtfulCall(action, step, e.subject_ref or "", decision, e.at))
                request_id = call.get("request_id")
                if isinstance(request_id, str) and request_id:
                    answered.append(
                        AnsweredCall(
                            request_id,
                            action,
                            step,
                            e.subject_ref or "",
                            decision,
                            int(call.get("fee_cents") or 0),
                            e.at,
                        )
                    )
        for e in self.store.audit.events(kind_prefix="consent.allowed", since=since, until=until):
            step = str(e.detail.get("step") or "")
            decision = str(e.detail.get("decision_id") or "")
            if step in actions and decision not in completed:
                doubtful.append(
                    DoubtfulCall(actions[step], step, e.subject_ref or "", decision, e.at)
                )
        answered.extend(self.face_calls(vendor, protocol, (since, until)))
        return answered, doubtful

    def face_calls(
        self, vendor: str, protocol: str, period: tuple[datetime, datetime]
    ) -> list[AnsweredCall]:
        """`vendor`'s face flows started in `period`, as its bill names them: a flow is billed
        once, at its verdict, under its token (Tencent's BizToken, Aliyun's CertifyId) and its
        start action (`DetectAuth`, `InitFaceVerify`), at the fee the verdict's code carries
        (`GetDetectInfoEnhanced`, `DescribeFaceVerify` in the contracts). A flow whose verdict
        was never read is recorded at 0: a bill line for it is `billed_not_recorded`."""
        apis = FACE_APIS.get(protocol)
        if apis is None:
            return []
        return [
            AnsweredCall(
                t.vendor_token,
                apis.create,
                FACE_STEP,
                t.applicant_ref,
                t.decision_id,
                t.fee_cents,
                t.pulled_at or t.created_at,
            )
            for t in self.store.face.of_vendor(vendor, since=period[0], until=period[1])
        ]
