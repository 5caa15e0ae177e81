"""The step runner: what every path that runs verifiers holds for the length of its work.

One HTTP session (its connections kept alive), its call slots, one `VendorClient` per vendor
(its circuit breaker and the contracts' limits), and each step's verifier built once. Each
step goes through the consent gate, under the first of the caller's purposes whose consent
covers it. A batch chunk, the on-demand engine, re-verification, the court re-query, a
subject request's re-check and the WeChat phone exchange each hold one.

At most `concurrency` steps are between their gate decision and their answer noted: a step
takes a place before it is decided and gives it back once its answer is noted, and the
decision of the step taking the place next is committed with the answers noted before it
(`verifiers.gate.DecisionRecorder`). So when the process dies, the calls sent whose answers
were not yet durable, which the real vendors bill again when they are sent again, are never
more than the call slots.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import aiohttp

from policies.consent import ASK_AGAIN
from policies.vendors import VendorContracts
from verifiers.base import ConsentPermit, Evidence, StepStatus, Subject, Verifier
from verifiers.limits import CallLimits
from verifiers.registry import MissingEndpointError, VerifierRegistry
from verifiers.vendor import VendorClient, VendorEndpoint


class StepGate(Protocol):
    """The consent gate's `run` (`verifiers.gate.ConsentGate`)."""

    async def run(
        self,
        verifier: Verifier,
        subject: Subject,
        *,
        purpose: str | None = None,
        call_ref: str | None = None,
    ) -> tuple[Evidence, str]: ...


@dataclass(frozen=True)
class Prior:
    """What earlier attempts at one paid call left behind (a run that died with them): the
    answer recorded for it (`evidence`, as the gate's `step.completed` event holds it), and
    the decisions whose call was sent and never answered (`in_doubt`)."""

    evidence: dict[str, Any] | None = None
    in_doubt: tuple[str, ...] = ()


class _Resumed:
    """A step's verifier for a call an earlier attempt made: the recorded answer is reused
    (a real vendor bills every call it receives, and takes no idempotency key); without one,
    the call is sent again when the contracts say so (`in_doubt.resend`), else the step ends
    `error` (`in_doubt`). The calls in doubt are named on the evidence either way."""

    def __init__(self, inner: Verifier, prior: Prior, *, resend: bool) -> None:
        self.inner = inner
        self.name = inner.name
        self.purpose = inner.purpose
        self.scopes = inner.scopes
        self.prior = prior
        self.resend = resend

    async def verify(self, subject: Subject, permit: ConsentPermit) -> Evidence:
        named = self.prior.in_doubt
        if self.prior.evidence is not None:
            return Evidence.model_validate(
                {
                    **self.prior.evidence,
                    "verifier": self.name,
                    "consent_id": permit.consent_id,
                    "reused": True,
                    "in_doubt_prior": named,
                }
            )
        if not self.resend:
            return Evidence(
                verifier=self.name,
                consent_id=permit.consent_id,
                status=StepStatus.ERROR,
                reason="in_doubt",
                in_doubt_prior=named,
            )
        evidence = await self.inner.verify(subject, permit)
        return evidence.model_copy(update={"in_doubt_prior": named})


@dataclass(frozen=True)
class Ran:
    """One step run: its evidence, the gate decision's id, and the purpose whose consent
    allowed it (None when no purpose's did: the evidence is `skipped`)."""

    evidence: Evidence
    decision_id: str
    purpose: str | None


class StepRunner:
    """Use as an async context manager around a piece of work: `run` a step (by name, or a
    per-call verifier) for a subject. The session is closed at the end; the limits are the
    caller's."""

    def __init__(
        self,
        gate: StepGate,
        registry: VerifierRegistry | None = None,
        endpoints: Mapping[str, VendorEndpoint] | None = None,
        *,
        concurrency: int = 8,
        timeout_s: float = 5.0,
        max_attempts: int = 3,
        limits: CallLimits | None = None,
        contracts: VendorContracts | None = None,
    ) -> None:
        self.gate = gate
        self.contracts = (
            contracts if contracts is not None else limits.contracts if limits else None
        )
        self._registry = registry
        self._endpoints = dict(endpoints or {})
        self._concurrency = max(1, concurrency)
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self.limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(self._concurrency)
        self._answering = asyncio.Semaphore(self._concurrency)
        self._clients: dict[str, VendorClient] = {}
        self._verifiers: dict[str, Verifier] = {}

    async def __aenter__(self) -> StepRunner:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._concurrency)
        )
        # One set of call slots for every vendor: the session's connections.
        self._slots = asyncio.Semaphore(self._concurrency)
        self._answering = asyncio.Semaphore(self._concurrency)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = None
        self._clients.clear()
        self._verifiers.clear()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The runner's HTTP session, for a per-call verifier built over it."""
        if self._session is None:
            raise RuntimeError("the step runner is not open: use `async with`")
        return self._session

    def client(self, vendor: str) -> VendorClient:
        """The vendor's client, built on first use (`MissingEndpointError` without an
        endpoint)."""
        found = self._clients.get(vendor)
        if found is None:
            if vendor not in self._endpoints:
                raise MissingEndpointError(vendor)
            found = self._clients[vendor] = VendorClient(
                self._endpoints[vendor],
                self.session,
                slots=self._slots,
                timeout_s=self._timeout_s,
                max_attempts=self._max_attempts,
                limits=self.limits,
            )
        return found

    def route(self, step: str) -> list[VendorClient]:
        """The clients of the vendors that serve `step`, primary first (the contracts'
        `steps`); `MissingEndpointError` when one has no endpoint."""
        if self.contracts is None:
            raise RuntimeError("this runner has no vendor contracts: it routes no step")
        route = self.contracts.route(step)
        if route is None:
            raise MissingEndpointError(step)
        return [self.client(vendor) for vendor in route.vendors]

    def verifier(self, step: str) -> Verifier:
        """The step's verifier, built once for this runner."""
        found = self._verifiers.get(step)
        if found is None:
            if self._registry is None:
                raise RuntimeError("this runner has no registry: pass the verifier itself")
            found = self._verifiers[step] = self._registry.build(step, self)
        return found

    async def run(
        self,
        step: str | Verifier,
        subject: Subject,
        *,
        purposes: Sequence[str] = (),
        call_ref: str | None = None,
        prior: Prior | None = None,
    ) -> Ran:
        """One step through the gate, under the first of `purposes` whose consent covers it
        (the verifier's own purpose when none is given): a refusal that another purpose's
        consent could answer (`policies.consent.ASK_AGAIN`) tries the next. With several
        purposes, each purpose's call is its own (`call_ref:purpose`). `prior`: what an
        earlier attempt at this call left (see `Prior`)."""
        verifier = self.verifier(step) if isinstance(step, str) else step
        if prior is not None and (prior.evidence is not None or prior.in_doubt):
            resend = self.contracts.in_doubt.resend if self.contracts is not None else True
            verifier = _Resumed(verifier, prior, resend=resend)  # type: ignore[assignment]
        tried: Sequence[str | None] = tuple(purposes) or (None,)
        evidence: Any = None
        decision_id = ""
        for purpose in tried:
            ref = f"{call_ref}:{purpose}" if call_ref is not None and len(tried) > 1 else call_ref
            # From the gate's decision to its answer noted, at most `concurrency` steps: the
            # next holder's decision commits the answers noted before it, so calls sent and
            # not durably answered (billed again if the process dies now: the real vendors
            # take no key) never outnumber the call slots.
            async with self._answering:
                evidence, decision_id = await self.gate.run(
                    verifier, subject, purpose=purpose, call_ref=ref
                )
            if evidence.status is StepStatus.SKIPPED and evidence.reason in ASK_AGAIN:
                continue
            break
        skipped = evidence.status is StepStatus.SKIPPED
        return Ran(evidence, decision_id, None if skipped else (purpose or verifier.purpose))
