"""Vendor contracts as data (`vendors.yaml`): per licensed API its contracted rate, its
per-person daily caps, its fee and the answers it bills; the spend ceilings of a run and a
day. Pure: the limiter that honours them is `verifiers.limits`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from policies.document import PolicyDocument

ApiPath = Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9/_.-]{1,200}$")]
PayloadField = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class ApiContract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_per_s: float = Field(gt=0, le=100_000)
    per_person_daily: dict[PayloadField, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    fee_cents: int = Field(ge=0)
    billed: frozenset[Annotated[str, StringConstraints(min_length=1, max_length=40)]] = Field(
        min_length=1
    )


class VendorContract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    apis: dict[ApiPath, ApiContract] = Field(min_length=1)


class SpendCeilings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    per_run_cents: int | None = Field(None, ge=1)
    per_day_cents: int | None = Field(None, ge=1)


class VendorContracts(PolicyDocument):
    version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    timezone: str = "Asia/Shanghai"
    headroom: float = Field(0.04, ge=0, lt=0.5)
    spend: SpendCeilings = SpendCeilings()
    vendors: dict[
        Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")], VendorContract
    ] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone (such as Asia/Shanghai)") from None
        return value

    def api(self, vendor: str, path: str) -> ApiContract | None:
        contract = self.vendors.get(vendor)
        return None if contract is None else contract.apis.get(path)

    def interval_s(self, api: ApiContract) -> float:
        """The time between two calls at the contracted rate less the headroom."""
        return 1.0 / (api.rate_per_s * (1.0 - self.headroom))

    def day(self, now: datetime) -> str:
        """The contract's calendar day of `now` (the vendors count caps per local day)."""
        return now.astimezone(ZoneInfo(self.timezone)).date().isoformat()
