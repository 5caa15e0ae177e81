"""The verifier registry: step name -> factory. The extension point every source uses.

A factory builds its step's verifier over the vendor clients of a step runner
(`verifiers.runner.StepRunner`: one client per vendor, one HTTP session), once per runner.
A verifier whose call takes an input of its own, such as the WeChat phone exchange's
one-time code, is not registered: its caller constructs it per call and hands it to the
runner (`PER_CALL_VERIFIERS` lists them, so the contract tests cover them too)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from verifiers.account_attributes import (
    AccountAttributesVerifier,
    AccountReader,
    OidcAccountVerifier,
)
from verifiers.base import Verifier
from verifiers.carrier_check import CarrierCheckVerifier
from verifiers.court_list import CourtListVerifier
from verifiers.credit_report import CreditReportVerifier
from verifiers.id_check import IdCheckVerifier
from verifiers.vendor import VendorAnswer, VendorClient, VendorVerifier
from verifiers.wechat_phone import WeChatPhoneVerifier


class VendorClients(Protocol):
    """Where a factory finds the client of its vendor (a step runner)."""

    def client(self, vendor: str) -> VendorClient:
        """The vendor's client; `MissingEndpointError` if no endpoint is configured."""
        ...


# The runner's vendor clients -> the step's verifier, for the runner's length of work.
Factory = Callable[[VendorClients], Verifier]


class UnknownVerifierError(KeyError):
    """A policy names a step no verifier is registered for."""

    def __init__(self, step: str, known: list[str]) -> None:
        super().__init__(
            f"no verifier registered for step {step!r} (known: {', '.join(known) or 'none'}); "
            "add a module under verifiers/ and register it in verifiers/registry.py"
        )
        self.step = step


class MissingEndpointError(KeyError):
    def __init__(self, vendor: str) -> None:
        super().__init__(f"no endpoint configured for vendor {vendor!r}")


class VerifierRegistry:
    def __init__(self) -> None:
        self._factories: dict[str, Factory] = {}

    def register(self, step: str, factory: Factory) -> None:
        if step in self._factories:
            raise ValueError(f"step {step!r} is already registered")
        self._factories[step] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def build(self, step: str, clients: VendorClients) -> Verifier:
        """The step's verifier over `clients` (a paid one calls through its vendor's)."""
        factory = self._factories.get(step)
        if factory is None:
            raise UnknownVerifierError(step, self.names())
        return factory(clients)


def _vendor_factory(cls: type[VendorVerifier[Any]]) -> Factory:
    def build(clients: VendorClients) -> Verifier:
        return cls(clients.client(cls.vendor))  # type: ignore[return-value]

    return build


# The licensed sources, each a step calling one vendor (its endpoint key in the settings).
VENDOR_VERIFIERS: tuple[type[VendorVerifier[Any]], ...] = (
    IdCheckVerifier,
    CarrierCheckVerifier,
    CourtListVerifier,
    CreditReportVerifier,
)
# Constructed by their callers, one per call, with that call's own input.
PER_CALL_VERIFIERS: tuple[type[Verifier], ...] = (WeChatPhoneVerifier,)


def vendor_endpoints(vendor: str | None = None) -> frozenset[str]:
    """The vendor paths the steps of `vendor` call (every paid step's without one)."""
    return frozenset(
        path
        for cls in VENDOR_VERIFIERS
        if vendor is None or cls.vendor == vendor
        for path in cls.endpoints
    )


def vendor_apis() -> dict[str, frozenset[str]]:
    """Every licensed vendor's paid paths: what the vendor contracts must cover."""
    return {vendor: vendor_endpoints(vendor) for vendor in vendors()}


def vendors() -> tuple[str, ...]:
    """The licensed vendors, in registry order."""
    return tuple(dict.fromkeys(cls.vendor for cls in VENDOR_VERIFIERS))


def vendor_steps(vendor: str | None = None) -> list[str]:
    """The steps that call `vendor` (every paid step without one)."""
    return [cls.name for cls in VENDOR_VERIFIERS if vendor is None or cls.vendor == vendor]


def vendor_answer(step: str) -> type[VendorAnswer] | None:
    """The answer type of a licensed vendor's step (None for any other step): what the
    drift suite checks that step's answers against."""
    for cls in VENDOR_VERIFIERS:
        if cls.name == step:
            return cls.answer
    return None


def default_registry(*, accounts: AccountReader | None = None) -> VerifierRegistry:
    """Every source shipped with idv, keyed by the step names policies use. The account
    steps read the authorized accounts through `accounts` (the store). Timeouts, attempts
    and limits are the runner's (its vendor clients')."""
    registry = VerifierRegistry()
    for cls in VENDOR_VERIFIERS:
        registry.register(cls.name, _vendor_factory(cls))
    if accounts is not None:
        for acls in (AccountAttributesVerifier, OidcAccountVerifier):
            registry.register(acls.name, lambda _c, c=acls: c(accounts))  # type: ignore[misc]
    return registry
