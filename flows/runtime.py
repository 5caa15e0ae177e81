"""The runtime a flow run or a command wires from its environment.

A flow run may execute in the `idv` process or on a Prefect worker on another node, so it
assembles its own runtime from `IDV_*` variables (`flows.settings.Settings`); the `idv`
command (the composition root) uses the same `Runtime`. Its parts (store, gate, registry,
policies, services) are `flows.parts.RuntimeParts`; on top of them it holds the work of
`flows/` that the services and the surfaces call back into: the court list re-queried
(`flows.court`) and the on-demand engine (`flows.on_demand`).
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any

from flows.parts import RuntimeParts
from flows.settings import Settings

if TYPE_CHECKING:  # the work loads when it is called for, not with every command's runtime
    from flows.on_demand import Engine

# One on-demand engine per runtime, however many request threads ask for it at once.
_ON_DEMAND_LOCK = threading.Lock()


class Runtime(RuntimeParts):
    """The parts, the court re-query and the on-demand engine over one set of settings."""

    @classmethod
    def from_env(cls) -> Runtime:
        return cls(Settings())

    def court_requery(self, applicant_ref: str) -> dict[str, Any]:
        """The court list asked again about one applicant, through the gate (`flows.court`)."""
        from flows.court import requery

        return requery(self, applicant_ref)

    @cached_property
    def on_demand(self) -> Engine:
        """The loop, vendor session and journal this process's on-demand requests share
        (`flows.on_demand.Engine`), started at the first request."""
        from flows.on_demand import Engine

        with _ON_DEMAND_LOCK:
            if "on_demand" not in self.__dict__:
                self.__dict__["on_demand"] = Engine(self)
            engine: Engine = self.__dict__["on_demand"]
            return engine

    def warm(self) -> None:
        """Load what answering a request uses (the store, the services, every policy, the
        gate, the verifiers, the on-demand engine) before the first request comes: a
        serving process then settles its heap over all of it (`flows.process.settle_heap`)."""
        for part in (
            "store",
            "services",
            "gate",
            "registry",
            "scorecard",
            "call_limits",
            "oauth_config",
            "behavior_policy",
            "quality_policy",
            "verification",
            "consent_policy",
            "notices",
            "access_policy",
            "retention_policy",
            "request_policy",
            "on_demand",
        ):
            getattr(self, part)

    def close(self) -> None:
        if "on_demand" in self.__dict__:
            self.__dict__.pop("on_demand").close()
        if "store" in self.__dict__:
            self.store.audit.close()  # its checkpoint timer, before the engine goes
        super().close()
