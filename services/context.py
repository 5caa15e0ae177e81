"""What a service is built over: the store, the key ring, the gate, the loaded
policies and the OAuth providers' configuration.

`flows.runtime.Runtime` is one (a flow run or a command wires it from the environment);
tests may pass any object with these attributes. The actor is who asks: every service call
that reads personal data or changes state takes one, for the permission check and the audit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

# Types only: who imports `Actor` (every command) must not load the store and the verifiers.
if TYPE_CHECKING:
    from policies.access import AccessPolicy, RetentionPolicy
    from policies.behavior import BehaviorPolicy
    from policies.consent import ConsentPolicy
    from policies.notices import Notice
    from policies.requests import RequestPolicy
    from policies.scorecard import Scorecard
    from policies.vendors import VendorContracts
    from services.oauth_config import OAuthConfig
    from storage.keyring import KeyRing
    from storage.store import Store
    from verifiers.gate import ConsentGate


class ServiceContext(Protocol):
    @property
    def store(self) -> Store: ...

    @property
    def keyring(self) -> KeyRing: ...

    @property
    def gate(self) -> ConsentGate: ...

    @property
    def scorecard(self) -> Scorecard: ...

    @property
    def consent_policy(self) -> ConsentPolicy: ...

    @property
    def notices(self) -> Mapping[str, Notice]: ...

    @property
    def access_policy(self) -> AccessPolicy: ...

    @property
    def retention_policy(self) -> RetentionPolicy: ...

    @property
    def behavior_policy(self) -> BehaviorPolicy: ...

    @property
    def request_policy(self) -> RequestPolicy: ...

    @property
    def vendor_contracts(self) -> VendorContracts: ...

    @property
    def checkpoint_dir(self) -> Path | None: ...

    @property
    def oauth_config(self) -> OAuthConfig: ...


@dataclass(frozen=True)
class Actor:
    """Who asks: a name for the audit chain and the role whose permissions apply."""

    name: str
    role: str


# The applicant in the portal: bound by the portal's session to one applicant ref. Not a role
# of `policies/access.yaml`, so no user can hold it and no permission there is its; only
# `AccessControl.require_applicant` lets it through (self-service).
APPLICANT_ROLE = "applicant"
APPLICANT = Actor(name="applicant", role=APPLICANT_ROLE)
