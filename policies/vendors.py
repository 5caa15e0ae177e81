"""Vendor contracts as data (`vendors.yaml`): which vendor serves which step (a primary and
an optional fallback), per vendor its protocol and per API (a real vendor's action, or a
generic adapter's path) its contracted rate, per-person daily caps, list price and what each
of its result codes means for the step and for the bill; the spend ceilings of a run and a
day; what a run resumed after a crash does with calls in doubt.

What a real vendor documents (its actions, their result codes, which are billed, the values
of the fields that detail them) is its wire's data (`verifiers.tencent.ACTIONS`,
`verifiers.aliyun.ACTIONS`); a contract that names an action the vendor does not have, or
leaves one of its documented codes unmapped, is refused at start with file, line and rule
(`verifiers.registry.check_routes`). Pure: the limiter that honours the figures is
`verifiers.limits`, the client that calls is `verifiers.vendor`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from policies.document import PolicyDocument, PolicyError

# A real vendor's action (`IdCardVerification`) or a generic adapter's path (`/v1/...`).
ApiName = Annotated[
    str, StringConstraints(pattern=r"^(/[A-Za-z0-9/_.-]{1,200}|[A-Z][A-Za-z0-9]{1,80})$")
]
PayloadField = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
VendorName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
Code = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_./:,+()\[-]{0,40}$")]
Protocol = Literal["tencent", "aliyun", "generic"]
Outcome = Literal["passed", "failed", "inconclusive", "error"]
Signal = str | int | float | bool


class CodeRule(BaseModel):
    """What one result code of a real vendor's API means: the step's outcome and reason,
    whether the vendor bills it, whether the step goes to the fallback vendor on it (a
    source-side fault that is not billed), and the signals it carries (a number's status)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    outcome: Outcome
    reason: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_:-]{1,60}$")]
    billed: bool
    fallback: bool = False
    signals: dict[PayloadField, Signal] = Field(default_factory=dict)
    # A flow's result code that is no verdict yet (Tencent's face flow "17 本次流程未完成"): the
    # result is pulled again later.
    pending: bool = False

    @model_validator(mode="after")
    def _fallback_unbilled(self) -> Self:
        if self.fallback and self.billed:
            raise ValueError("a billed code is an answer: it never goes to the fallback")
        if self.pending and self.billed:
            raise ValueError("a billed code is a verdict: it is never pending")
        return self


class DetailRule(BaseModel):
    """What one value of a field that details a result means (MobileStatus's `StatusCode`,
    MobileOnlineTime's `TimeCode`): it replaces the code's outcome and reason, and adds its
    signals. Billing stays the result code's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    outcome: Outcome
    reason: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_:-]{1,60}$")]
    signals: dict[PayloadField, Signal] = Field(default_factory=dict)


FieldName = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Za-z0-9]{0,40}$")]


class ApiContract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_per_s: float = Field(gt=0, le=100_000)
    per_person_daily: dict[PayloadField, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    # Calls one person may have in any 60 seconds (Tencent's face flow: the same ID number 15
    # a minute), per field.
    per_person_per_minute: dict[PayloadField, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict
    )
    fee_cents: int = Field(ge=0)
    # The generic adapter's billed answers (its `result` values).
    billed: frozenset[Annotated[str, StringConstraints(min_length=1, max_length=40)]] = Field(
        default_factory=frozenset
    )
    # A real vendor's result codes (the documented ones, each mapped), and per field that
    # details some of them, its documented values, each mapped.
    codes: dict[Code, CodeRule] = Field(default_factory=dict)
    details: dict[FieldName, dict[Code, DetailRule]] = Field(default_factory=dict)

    def billed_code(self, code: str) -> bool:
        rule = self.codes.get(code)
        return rule.billed if rule is not None else code in self.billed


class VendorContract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: Protocol = "generic"
    # Where the figures come from: the vendor's pages, or "sandbox" for the sandbox's own.
    source: str | None = Field(None, max_length=400)
    apis: dict[ApiName, ApiContract] = Field(min_length=1)

    @model_validator(mode="after")
    def _shape(self) -> Self:
        for name, api in self.apis.items():
            if self.protocol == "generic":
                if not name.startswith("/"):
                    raise ValueError(f"a generic adapter's API is a path: {name} is not")
                if not api.billed:
                    raise ValueError(f"{name}: a generic API names the answers it bills")
            else:
                if name.startswith("/"):
                    raise ValueError(f"a {self.protocol} API is an action name: {name} is not")
                if not api.codes and api.fee_cents:
                    # A call the vendor never bills (a face flow's create call) may answer no
                    # result code; the vendor's table says which (`contract_problems`).
                    raise ValueError(f"{name}: a {self.protocol} API maps its result codes")
        return self


class StepRoute(BaseModel):
    """Which vendor serves a step, and which takes over when the primary's breaker is open
    or it answers a source-side fault that is not billed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    primary: VendorName
    fallback: VendorName | None = None

    @model_validator(mode="after")
    def _two(self) -> Self:
        if self.fallback == self.primary:
            raise ValueError("the fallback must be another vendor than the primary")
        return self

    @property
    def vendors(self) -> tuple[str, ...]:
        return (self.primary,) if self.fallback is None else (self.primary, self.fallback)


class SpendCeilings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    per_run_cents: int | None = Field(None, ge=1)
    per_day_cents: int | None = Field(None, ge=1)


class InDoubt(BaseModel):
    """A paid call decided by the gate whose answer was never stored (the process died with
    it in flight): neither real vendor takes an idempotency key, so it was billed whether or
    not we read it. A resumed run sends it again (`resend`: the applicant must not wait) or
    ends the step `error` with reason `in_doubt` for a person to decide."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resend: bool = True


class FaceFlow(BaseModel):
    """How the lender's account at a vendor runs the hosted face flow, as its console set it
    up: Tencent's `rule_id` (业务流程 RuleId), Aliyun's `scene_id` (认证场景 SceneId) with its
    `product_code` and liveness `model`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{1,32}$")] | None = None
    scene_id: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,20}$")] | None = None
    product_code: Annotated[str, StringConstraints(pattern=r"^[A-Z_]{2,20}$")] | None = None
    model: Annotated[str, StringConstraints(pattern=r"^[A-Z_]{2,30}$")] | None = None


class VendorContracts(PolicyDocument):
    version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    timezone: str = "Asia/Shanghai"
    headroom: float = Field(0.04, ge=0, lt=0.5)
    spend: SpendCeilings = SpendCeilings()
    in_doubt: InDoubt = InDoubt()
    steps: dict[PayloadField, StepRoute] = Field(default_factory=dict)
    vendors: dict[VendorName, VendorContract] = Field(min_length=1)
    # Per vendor serving the face step, its hosted flow's configuration.
    face: dict[VendorName, FaceFlow] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone (such as Asia/Shanghai)") from None
        return value

    @model_validator(mode="after")
    def _routes_known(self) -> Self:
        for step, route in self.steps.items():
            for vendor in route.vendors:
                if vendor not in self.vendors:
                    raise ValueError(
                        f"steps.{step} names {vendor}, which is no vendor of `vendors`"
                    )
        for vendor in self.face:
            if vendor not in self.vendors:
                raise ValueError(f"face names {vendor}, which is no vendor of `vendors`")
        return self

    def route(self, step: str) -> StepRoute | None:
        return self.steps.get(step)

    def api(self, vendor: str, name: str) -> ApiContract | None:
        contract = self.vendors.get(vendor)
        return None if contract is None else contract.apis.get(name)

    def protocol(self, vendor: str) -> str | None:
        contract = self.vendors.get(vendor)
        return None if contract is None else contract.protocol

    def interval_s(self, api: ApiContract) -> float:
        """The time between two calls at the contracted rate less the headroom."""
        return 1.0 / (api.rate_per_s * (1.0 - self.headroom))

    def day(self, now: datetime) -> str:
        """The contract's calendar day of `now` (the vendors count caps per local day)."""
        return now.astimezone(ZoneInfo(self.timezone)).date().isoformat()


__all__ = [
    "ApiContract",
    "CodeRule",
    "DetailRule",
    "FaceFlow",
    "InDoubt",
    "PolicyError",
    "StepRoute",
    "VendorContract",
    "VendorContracts",
]
