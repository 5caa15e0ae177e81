"""The policies shipped in this folder, parsed and validated.

The only module of `policies/` that reads anything: its own YAML files, once.
Everything else here is pure. Pass another text to the `from_yaml` class
methods to evaluate a policy that is not shipped (a backtest, a test).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from policies.consent import ConsentPolicy
from policies.scorecard import Scorecard
from policies.verification import VerificationPolicy


def read_text(name: str) -> str:
    return resources.files("policies").joinpath(name).read_text(encoding="utf-8")


@cache
def consent_policy() -> ConsentPolicy:
    return ConsentPolicy.from_yaml(read_text("consent.yaml"))


@cache
def scorecard() -> Scorecard:
    return Scorecard.from_yaml(read_text("risk/scorecard.yaml"))


@cache
def verification_policy() -> VerificationPolicy:
    return VerificationPolicy.from_yaml(read_text("verification.yaml"))
