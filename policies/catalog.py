"""The policies shipped in this folder, parsed and validated, each once.

The files are read through `shipped.read_text`; the policies a module judges by when a
caller passes none are parsed by that module itself, below this one (`identity.identity_policy`,
`case_number.case_number_table`, `masking.masking_policy`). Pass another text to the
`from_yaml` class methods to evaluate a policy that is not shipped (a backtest, a test).
"""

from __future__ import annotations

from functools import cache

from policies.access import AccessPolicy, RetentionPolicy
from policies.behavior import BehaviorPolicy
from policies.cases import WORKFLOW_REASONS, CasePolicy
from policies.consent import ConsentPolicy
from policies.notices import Notice, parse_notice
from policies.quality import QualityPolicy
from policies.requests import CASE_REASONS, RequestPolicy
from policies.scorecard import Scorecard
from policies.shipped import folder_texts, read_text
from policies.vendors import VendorContracts
from policies.verification import VerificationPolicy


@cache
def consent_policy() -> ConsentPolicy:
    return ConsentPolicy.from_yaml(read_text("consent.yaml"))


@cache
def scorecard() -> Scorecard:
    return Scorecard.from_yaml(
        read_text("risk/scorecard.yaml"), source="policies/risk/scorecard.yaml"
    )


@cache
def behavior_policy() -> BehaviorPolicy:
    return BehaviorPolicy.from_yaml(read_text("behavior.yaml"), source="policies/behavior.yaml")


@cache
def quality_policy() -> QualityPolicy:
    return QualityPolicy.from_yaml(read_text("quality.yaml"), source="policies/quality.yaml")


@cache
def verification_policy() -> VerificationPolicy:
    return VerificationPolicy.from_yaml(read_text("verification.yaml"))


@cache
def notices() -> dict[str, Notice]:
    """Every notice in `notices/`, by version; a duplicate version is an error."""
    found: dict[str, Notice] = {}
    for name, text in folder_texts("notices", ".md"):
        notice = parse_notice(text, name=name)
        if notice.version in found:
            raise ValueError(f"notices/{name}: version {notice.version} is not unique")
        found[notice.version] = notice
    return found


@cache
def notice_texts() -> dict[str, str]:
    """Every notice's text as shown (after its front matter, line endings LF, stripped), by
    version: the bytes whose SHA-256 is the notice's `text_sha256`."""
    texts: dict[str, str] = {}
    for name, text in folder_texts("notices", ".md"):
        notice = parse_notice(text, name=name)
        body = text.split("\n---\n", 1)[1]
        texts[notice.version] = body.replace("\r\n", "\n").strip()
    return texts


@cache
def access_policy() -> AccessPolicy:
    return AccessPolicy.from_yaml(read_text("access.yaml"))


@cache
def retention_policy() -> RetentionPolicy:
    return RetentionPolicy.from_yaml(read_text("retention.yaml"), source="policies/retention.yaml")


@cache
def vendor_contracts() -> VendorContracts:
    return VendorContracts.from_yaml(read_text("vendors.yaml"), source="policies/vendors.yaml")


def schedules_text() -> str:
    """The shipped schedules (`schedules.yaml`); `schedules.SchedulePolicy.from_yaml` reads
    it against the deployments the flows declare."""
    return read_text("schedules.yaml")


@cache
def request_policy() -> RequestPolicy:
    return RequestPolicy.from_yaml(read_text("requests.yaml"), source="policies/requests.yaml")


def case_policy() -> CasePolicy:
    return CasePolicy.load(
        read_text("cases.yaml"),
        source="policies/cases.yaml",
        known_reasons=[*scorecard().reasons, *CASE_REASONS.values(), *WORKFLOW_REASONS],
    )
