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

from intake.statement import StatementError, StatementRefusal, read_statement_text
from policies.billing import BilledCall, Reconciliation, reconcile
from services.context import Actor
from services.errors import InvalidInput
from storage.store import Store
from verifiers.registry import vendor_endpoints, vendor_steps, vendors
from verifiers.vendor import call_key


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
    def __init__(self, store: Store) -> None:
        self.store = store

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
        `vendor`, only that vendor's endpoints are compared. Recorded in the audit chain."""
        if vendor is not None and vendor not in vendors():
            raise InvalidInput("vendor", f"must be one of {', '.join(vendors())}")
        try:
            read = read_statement_text(statement.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise InvalidInput("statement", "is not UTF-8 text") from None
        except StatementError as exc:
            raise InvalidInput("statement", str(exc).removeprefix("statement: ")) from None
        billed = [x for x in read if isinstance(x, BilledCall)]
        unreadable = [x for x in read if isinstance(x, StatementRefusal)]
        other_lines = 0
        if vendor is not None:
            paths = vendor_endpoints(vendor)
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
            steps=vendor_steps(vendor),
        )
        result = reconcile(
            billed,
            recorded,
            period=period,
            made=self._made(period, {b.idempotency_key for b in billed}),
        )
        self.store.audit.record(
            "fees.reconciled",
            None,
            {
                "statement_sha256": hashlib.sha256(statement).hexdigest(),
                "vendor": vendor,
                "from": first.isoformat(),
                "to": last.isoformat(),
                "counts": result.counts(),
                "unreadable_lines": len(unreadable),
                "billed_cents": result.billed_cents,
                "recorded_cents": result.recorded_cents,
                "actor": actor.name,
            },
        )
        return FeeReconciliation(
            first=first,
            last=last,
            vendor=vendor,
            result=result,
            unreadable=unreadable,
            other_vendors_lines=other_lines,
        )
