"""Licensed checks through real vendors: one step, one product (an ID two-element check, a
carrier three-element check, a number's status, its tenure), served by the vendors its route
names (`policies/vendors.yaml` `steps`: a primary and an optional fallback).

A step declares, per protocol, the vendor's action and how its parameters are built from the
subject (`Action`). What each result code means (outcome, reason, billed, fallback, signals)
is the contract's data, never a branch here: the code is read from the answer field the
vendor documents as the result (`documented`: Tencent's `Result`, Aliyun's `BizCode`) and
looked up in the contract; a field that details it (`StatusCode`, `SubCode`, `TimeCode`,
`Range`), when the answer has it, refines the outcome and adds signals. A code the contract
does not map is an answer of a shape the vendor does not document: the step ends `error`
naming the field, never the value.

The step goes to the fallback, under the same consent decision, when the primary's breaker
is open, or it answered a code marked `fallback` (a source-side fault it does not bill), or
it could not be reached without any attempt in doubt. Every call is on the evidence
(`Evidence.calls`) and so in the audit chain's `step.completed` event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from policies.vendors import ApiContract, VendorContracts
from verifiers.base import ConsentPermit, Evidence, StepStatus, Subject
from verifiers.limits import Admission
from verifiers.metrics import record_vendor_call
from verifiers.vendor import VendorClient, VendorReply

# Faults after which the same call may go to the fallback: nothing was billed for them.
_NOT_SENT = frozenset({"circuit_open", "rate_wait_exceeded"})


@dataclass(frozen=True)
class Documented:
    """An action as its vendor documents it: the field holding the result code, each code
    with whether it is billed, and the documented values of the fields that detail codes."""

    result_field: str
    billed: Mapping[str, bool]
    details: Mapping[str, frozenset[str]]


def documented(protocol: str, action: str) -> Documented | None:
    """What `protocol`'s vendor documents for `action` (its wire's data), or None when it
    has no such action."""
    if protocol == "tencent":
        from verifiers import tencent

        f = tencent.FACE_ACTIONS.get(action)
        if f is not None:  # the face flow: its verdict is the pull's, billed per FACE_CODES
            if f.result_field is None:
                return Documented("", {}, {})
            return Documented(
                f.result_field, {c: r.billed for c, r in tencent.FACE_CODES.items()}, {}
            )
        t = tencent.ACTIONS.get(action)
        if t is None:
            return None
        details = {
            name: frozenset(v for v in values if v)
            for name, values in t.answer_fields.items()
            if values
        }
        return Documented(t.result_field, {c: r.billed for c, r in t.codes.items()}, details)
    if protocol == "aliyun":
        from verifiers import aliyun

        fa = aliyun.FACE_ACTIONS.get(action)
        if fa is not None:  # the face flow: the coded field with the billing decides
            deciding = [
                name
                for name in fa.result_fields
                if any(r.billed is not None for r in fa.codes.get(name, {}).values())
            ]
            if not deciding:
                return Documented("", {}, {})
            field = deciding[0]
            return Documented(
                field,
                {c: bool(r.billed) for c, r in fa.codes[field].items()},
                {n: frozenset(v) for n, v in fa.codes.items() if n != field},
            )
        a = aliyun.ACTIONS.get(action)
        if a is None:
            return None
        biz = a.codes["BizCode"]
        details = {name: frozenset(v) for name, v in a.codes.items() if name != "BizCode"}
        return Documented("BizCode", {c: bool(r.billed) for c, r in biz.items()}, details)
    return None


def contract_problems(
    protocol: str, action: str, api: ApiContract
) -> list[tuple[tuple[str, ...], str]]:
    """Where a contract's API disagrees with what the vendor documents: (path under the API,
    rule). An undocumented action, an unmapped or undocumented code, a billing that is not
    the vendor's, a detail field or value the vendor does not document, or one left out."""
    doc = documented(protocol, action)
    if doc is None:
        return [((), f"is not an action {protocol} documents")]
    out: list[tuple[tuple[str, ...], str]] = []
    for code in sorted(set(api.codes) - set(doc.billed)):
        out.append((("codes", code), "is not a documented code"))
    for code in sorted(set(doc.billed) - set(api.codes)):
        out.append((("codes",), f"leaves documented code {code} unmapped"))
    for code, rule in sorted(api.codes.items()):
        if code in doc.billed and rule.billed != doc.billed[code]:
            out.append((("codes", code, "billed"), "disagrees with what the vendor bills"))
    for name, values in sorted(api.details.items()):
        known = doc.details.get(name)
        if known is None:
            out.append((("details", name), "is not a field the vendor documents values of"))
            continue
        for value in sorted(set(values) - known):
            out.append((("details", name, value), "is not a documented value"))
        for value in sorted(known - set(values)):
            out.append((("details", name), f"leaves documented value {value} unmapped"))
    return out


@dataclass(frozen=True)
class Action:
    """A vendor's action for a step, and its parameters, named as the vendor names them."""

    name: str
    params: Callable[[Subject], dict[str, Any]]


def _phone(subject: Subject) -> str:
    return subject.phone.get_secret_value().removeprefix("+86") if subject.phone else ""


def _outcome(name: str) -> StepStatus:
    return StepStatus(name)


@dataclass
class _Call:
    """One vendor's part in a step."""

    vendor: str
    action: str
    evidence: Evidence
    next: bool  # the step goes on to the fallback

    def note(self) -> dict[str, str | int | bool | None]:
        return {
            "vendor": self.vendor,
            "action": self.action,
            "code": self.evidence.result_code,
            "reason": self.evidence.reason,
            "request_id": self.evidence.vendor_request_id,
            "fee_cents": self.evidence.fee_cents,
            "in_doubt": self.evidence.in_doubt,
        }


class LicensedVerifier:
    """Base of the licensed steps. Subclasses declare `name`, `purpose`, `scopes`,
    `actions` (by protocol) and `needs_phone`."""

    name: ClassVar[str]
    purpose: ClassVar[str] = "onboarding_verification"
    scopes: ClassVar[frozenset[str]]
    actions: ClassVar[Mapping[str, Action]]
    needs_phone: ClassVar[bool] = False

    def __init__(self, clients: Sequence[VendorClient], contracts: VendorContracts) -> None:
        self._clients = tuple(clients)
        self._contracts = contracts

    @classmethod
    def action_names(cls) -> dict[str, str]:
        """Protocol -> action name: what the contracts must cover for this step."""
        return {protocol: action.name for protocol, action in cls.actions.items()}

    async def verify(self, subject: Subject, permit: ConsentPermit) -> Evidence:
        if self.needs_phone and subject.phone is None:
            return Evidence(
                verifier=self.name,
                consent_id=permit.consent_id,
                status=StepStatus.INCONCLUSIVE,
                reason="no_phone",
            )
        calls: list[_Call] = []
        for i, client in enumerate(self._clients):
            last = i == len(self._clients) - 1
            if not last and await client.breaker_open():
                evidence = self._error(permit, "circuit_open", 0)
                calls.append(_Call(client.name, self._action(client).name, evidence, True))
                continue
            call = await self._one(client, subject, permit)
            calls.append(call)
            if not call.next or last:
                break
        final = calls[-1].evidence
        return final.model_copy(
            update={
                "attempts": sum(c.evidence.attempts for c in calls),
                "in_doubt": sum(c.evidence.in_doubt for c in calls),
                "fee_cents": sum(c.evidence.fee_cents for c in calls),
                "calls": tuple(c.note() for c in calls),
            }
        )

    def _action(self, client: VendorClient) -> Action:
        action = self.actions.get(client.protocol)
        if action is None:  # refused at start (the contracts' check); a guard here
            raise LookupError(f"{self.name} has no {client.protocol} action")
        return action

    def _error(self, permit: ConsentPermit, reason: str, attempts: int) -> Evidence:
        return Evidence(
            verifier=self.name,
            consent_id=permit.consent_id,
            status=StepStatus.ERROR,
            reason=reason,
            attempts=attempts,
        )

    async def _one(self, client: VendorClient, subject: Subject, permit: ConsentPermit) -> _Call:
        action = self._action(client)
        api = self._contracts.api(client.name, action.name)
        if api is None:
            raise LookupError(f"no contract for {client.name} {action.name}")
        admission: Admission | None = None
        limits = client.limits
        if limits is not None:
            admitted = await limits.admit(
                client.api(action.name),
                {
                    "id_number": subject.id_number.get_secret_value(),
                    "name": subject.name.get_secret_value(),
                    "phone": _phone(subject),
                },
            )
            if isinstance(admitted, str):  # capped or over budget: not sent
                return _Call(client.name, action.name, self._error(permit, admitted, 0), False)
            admission = admitted
        started = time.perf_counter()
        reply = await client.post(action.name, action.params(subject))
        evidence, go_on = self._read(client, action, api, reply, permit)
        if reply.attempts:
            # Labelled by the contract's reason (a closed vocabulary), never by a value.
            record_vendor_call(
                client.name,
                action.name,
                evidence.reason,
                billed=evidence.fee_cents > 0,
                seconds=time.perf_counter() - started,
            )
        if admission is not None and limits is not None:
            # Settled to the fee of the code; a call with an attempt in doubt may have been
            # billed: its reservation stands.
            await limits.settle(admission, None if evidence.in_doubt else evidence.fee_cents)
        return _Call(client.name, action.name, evidence, go_on)

    def _read(
        self,
        client: VendorClient,
        action: Action,
        api: ApiContract,
        reply: VendorReply,
        permit: ConsentPermit,
    ) -> tuple[Evidence, bool]:
        answer = reply.answer
        base: dict[str, Any] = {
            "verifier": self.name,
            "consent_id": permit.consent_id,
            "attempts": reply.attempts,
            "in_doubt": reply.in_doubt,
            "vendor": client.name,
            "vendor_request_id": answer.request_id if answer is not None else None,
        }
        if reply.error is not None or answer is None:
            reason = reply.error or "vendor_malformed"
            evidence = Evidence(status=StepStatus.ERROR, reason=reason, **base)
            go_on = reason in _NOT_SENT or (reply.in_doubt == 0 and reply.status is None)
            return evidence, go_on
        doc = documented(client.protocol, action.name)
        field = doc.result_field if doc is not None else "Result"
        value = answer.fields.get(field)
        rule = api.codes.get(str(value)) if value is not None else None
        if rule is None:
            evidence = Evidence(status=StepStatus.ERROR, reason=f"vendor_malformed:{field}", **base)
            return evidence, False
        code = str(value)
        outcome, reason, signals = rule.outcome, rule.reason, dict(rule.signals)
        refined = False
        for name, values in api.details.items():
            detail = answer.fields.get(name)
            if detail is None or detail == "":
                continue
            drule = values.get(str(detail))
            if drule is None:
                evidence = Evidence(
                    status=StepStatus.ERROR, reason=f"vendor_malformed:{name}", **base
                )
                return evidence, False
            code = f"{code}/{detail}"
            outcome, reason = drule.outcome, drule.reason
            signals.update(drule.signals)
            refined = True
        if api.details and not refined and outcome == "passed" and not signals:
            # A pass that says nothing by itself (MobileStatus "0": the status is StatusCode's;
            # a tenure "0": the band is Range's) came without its detail, renamed or dropped
            # by a release: a shape the vendor does not document, never a silent pass.
            field = next(iter(api.details))
            evidence = Evidence(status=StepStatus.ERROR, reason=f"vendor_malformed:{field}", **base)
            return evidence, False
        evidence = Evidence(
            status=_outcome(outcome),
            reason=reason,
            result_code=code,
            as_of=datetime.now(ZoneInfo(self._contracts.timezone)).date(),
            fee_cents=api.fee_cents if rule.billed else 0,
            signals=signals,
            answer_shape=frozenset(answer.fields),
            **base,
        )
        return evidence, rule.fallback
