"""The verifier registry: step name -> factory. The extension point every source uses.

A factory builds its step's verifier over the vendor clients of a step runner
(`verifiers.runner.StepRunner`: one client per vendor, one HTTP session), once per runner.
A verifier whose call takes an input of its own, such as the WeChat phone exchange's
one-time code, is not registered: its caller constructs it per call and hands it to the
runner (`PER_CALL_VERIFIERS` lists them, so the contract tests cover them too)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from policies.document import LinedYaml
from policies.vendors import VendorContracts
from verifiers.account_attributes import (
    AccountAttributesVerifier,
    AccountReader,
    OidcAccountVerifier,
)
from verifiers.base import Verifier
from verifiers.carrier_check import (
    CarrierCheckVerifier,
    NumberStatusVerifier,
    NumberTenureVerifier,
)
from verifiers.court_list import CourtListVerifier
from verifiers.credit_report import CreditReportVerifier
from verifiers.face import FaceCheckVerifier, face_route_problems
from verifiers.id_check import IdCheckVerifier
from verifiers.licensed import LicensedVerifier, contract_problems
from verifiers.vendor import VendorAnswer, VendorClient, VendorVerifier
from verifiers.wechat_phone import WeChatPhoneVerifier


class VendorClients(Protocol):
    """Where a factory finds the client of its vendor (a step runner)."""

    contracts: VendorContracts | None

    def client(self, vendor: str) -> VendorClient:
        """The vendor's client; `MissingEndpointError` if no endpoint is configured."""
        ...

    def route(self, step: str) -> Sequence[VendorClient]:
        """The clients of the vendors serving `step`, primary first."""
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


def _licensed_factory(cls: type[LicensedVerifier]) -> Factory:
    def build(clients: VendorClients) -> Verifier:
        if clients.contracts is None:
            raise MissingEndpointError(cls.name)
        return cls(clients.route(cls.name), clients.contracts)

    return build


# The licensed checks through real vendors (Tencent Cloud, Alibaba Cloud), each routed to a
# primary and an optional fallback vendor by the contracts' `steps`.
LICENSED_VERIFIERS: tuple[type[LicensedVerifier], ...] = (
    IdCheckVerifier,
    CarrierCheckVerifier,
    NumberStatusVerifier,
    NumberTenureVerifier,
)
# The sources through the generic adapter, each a step calling one vendor (its endpoint key
# in the settings).
VENDOR_VERIFIERS: tuple[type[VendorVerifier[Any]], ...] = (
    CourtListVerifier,
    CreditReportVerifier,
)
# Constructed by their callers, one per call, with that call's own input.
PER_CALL_VERIFIERS: tuple[type[Verifier], ...] = (WeChatPhoneVerifier, FaceCheckVerifier)


def vendor_apis(contracts: VendorContracts) -> dict[str, frozenset[str]]:
    """Every vendor's paid APIs the steps call, as the contracts route them: a licensed
    step's action at each vendor of its route (by the vendor's protocol), a generic step's
    paths at its vendor. What the contracts must cover (`check_routes`)."""
    out: dict[str, set[str]] = {}
    for lcls in LICENSED_VERIFIERS:
        route = contracts.route(lcls.name)
        for vendor in route.vendors if route is not None else ():
            action = lcls.actions.get(contracts.protocol(vendor) or "")
            if action is not None:
                out.setdefault(vendor, set()).add(action.name)
    for cls in VENDOR_VERIFIERS:
        route = contracts.route(cls.name)
        vendor = route.primary if route is not None else cls.vendor
        out.setdefault(vendor, set()).update(cls.endpoints)
    return {vendor: frozenset(apis) for vendor, apis in out.items()}


def check_routes(contracts: VendorContracts) -> list[tuple[tuple[str, ...], str]]:
    """What keeps the contracts from serving every paid step: (path in the file, rule)."""
    problems: list[tuple[tuple[str, ...], str]] = []
    for lcls in LICENSED_VERIFIERS:
        route = contracts.route(lcls.name)
        if route is None:
            problems.append((("steps", lcls.name), "every licensed step needs a route"))
            continue
        for role, vendor in (("primary", route.primary), ("fallback", route.fallback)):
            protocol = contracts.protocol(vendor) if vendor is not None else None
            if vendor is None or protocol is None:
                continue
            if protocol not in lcls.actions:
                problems.append(
                    (
                        ("steps", lcls.name, role),
                        f"{vendor} speaks {protocol}, no product of it serves this step",
                    )
                )
    for cls in VENDOR_VERIFIERS:
        route = contracts.route(cls.name)
        if route is not None and (
            contracts.protocol(route.primary) != "generic" or route.fallback is not None
        ):
            problems.append(
                (("steps", cls.name), "is served by one generic adapter, with no fallback")
            )
    problems.extend(face_route_problems(contracts))
    for name, contract in contracts.vendors.items():
        if contract.protocol == "generic":
            continue
        for action, terms in contract.apis.items():
            for where, rule in contract_problems(contract.protocol, action, terms):
                problems.append((("vendors", name, "apis", action, *where), rule))
    for vendor, apis in vendor_apis(contracts).items():
        for api in sorted(apis):
            if contracts.api(vendor, api) is None:
                problems.append(
                    (("vendors", vendor, "apis", api), "every paid API needs a contract")
                )
    return problems


def load_contracts(text: str, *, source: str) -> VendorContracts:
    """A contracts file read and checked: its shape (`VendorContracts`), then every route
    and API against the steps and what the vendors document (`check_routes`). `PolicyError`
    names the file, the line and the rule of the first thing that does not hold."""
    contracts = VendorContracts.from_yaml(text, source=source)
    for where, rule in check_routes(contracts):
        raise LinedYaml(text, source).error(where, rule)
    return contracts


def vendor_steps(contracts: VendorContracts, vendor: str | None = None) -> list[str]:
    """The paid steps that call `vendor` (every paid step without one)."""
    steps = [lcls.name for lcls in LICENSED_VERIFIERS] + [cls.name for cls in VENDOR_VERIFIERS]
    if vendor is None:
        return steps
    out = []
    for step in steps:
        route = contracts.route(step)
        if route is not None and vendor in route.vendors:
            out.append(step)
        elif route is None and any(c.name == step and c.vendor == vendor for c in VENDOR_VERIFIERS):
            out.append(step)
    return out


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
    for lcls in LICENSED_VERIFIERS:
        registry.register(lcls.name, _licensed_factory(lcls))
    for cls in VENDOR_VERIFIERS:
        registry.register(cls.name, _vendor_factory(cls))
    if accounts is not None:
        for acls in (AccountAttributesVerifier, OidcAccountVerifier):
            registry.register(acls.name, lambda _c, c=acls: c(accounts))  # type: ignore[misc]
    return registry
