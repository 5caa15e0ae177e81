"""Every service over one context: what a surface or a flow holds to reach the operations."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from services.context import Actor, ServiceContext

# Each service's module loads when the service is first used: a command that reads the
# review queue loads neither the vendors' clients nor the OAuth stack.
if TYPE_CHECKING:
    from services.access import AccessControl
    from services.accounts import AccountService
    from services.applicant_links import LinkService
    from services.applicant_portal import PortalService
    from services.applicant_self import ApplicantSelfService
    from services.audit import AuditService
    from services.backtest import BacktestService
    from services.cases import CaseService
    from services.compliance import ComplianceService
    from services.consent import ConsentService
    from services.court_list import CourtListService
    from services.events import EventService
    from services.explain import ExplainService
    from services.face import FaceService
    from services.fees import FeeService
    from services.health import HealthService
    from services.inbox import InboxService
    from services.keys import KeyService
    from services.oauth import OAuthService
    from services.people import PeopleService
    from services.requests import SubjectRequestService
    from services.rescreen import RescreenService
    from services.retention import RetentionService
    from services.runs import RunService
    from services.subjects import SubjectService


class Services:
    """Built once per context (a `flows.runtime.Runtime`); each service on first use."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    @cached_property
    def access(self) -> AccessControl:
        """The permission check (audited refusals) every service below makes."""
        from services.access import AccessControl
        return AccessControl(self._ctx.store, self._ctx.access_policy)

    @cached_property
    def consent(self) -> ConsentService:
        from services.consent import ConsentService
        return ConsentService(self._ctx.store, self._ctx.consent_policy, self._ctx.notices,
                              access=self.access)

    @cached_property
    def subjects(self) -> SubjectService:
        from services.subjects import SubjectService
        return SubjectService(self._ctx.store, self._ctx.access_policy,
                              self._ctx.retention_policy, control=self.access,
                              limits=lambda: getattr(self._ctx, "call_limits", None))

    @cached_property
    def keys(self) -> KeyService:
        from services.keys import KeyService
        return KeyService(self._ctx.store, self._ctx.keyring, access=self.access)

    @cached_property
    def fees(self) -> FeeService:
        from services.fees import FeeService
        return FeeService(self._ctx.store, self._ctx.vendor_contracts)

    @cached_property
    def explain(self) -> ExplainService:
        from services.explain import ExplainService
        return ExplainService(self._ctx.store, self._ctx.scorecard)

    @cached_property
    def runs(self) -> RunService:
        from services.runs import RunService
        return RunService(self._ctx.store, access=self.access)

    @cached_property
    def inbox(self) -> InboxService:
        from services.inbox import InboxService
        return InboxService(self._ctx.store, self.runs)

    @cached_property
    def audit(self) -> AuditService:
        from services.audit import AuditService
        return AuditService(self._ctx.store, self.access)

    @cached_property
    def backtest(self) -> BacktestService:
        from services.backtest import BacktestService
        return BacktestService(self._ctx.store, self.access)

    @cached_property
    def accounts(self) -> AccountService:
        from services.accounts import AccountService
        return AccountService(self._ctx.store)

    @cached_property
    def oauth(self) -> OAuthService:
        from services.oauth import OAuthService
        return OAuthService(self._ctx.store, self.consent, self._ctx.notices, self._ctx.gate,
                            self._ctx.oauth_config)

    @cached_property
    def events(self) -> EventService:
        from services.events import EventService
        return EventService(self._ctx.store, self._ctx.gate, self._ctx.behavior_policy,
                            self._ctx.scorecard, access=self.access)

    @cached_property
    def health(self) -> HealthService:
        """The readiness checks (`/readyz`, `idv doctor`): the store and key ring reached on
        each check, Redis when the runtime shares limits through it, the Prefect server when
        `PREFECT_API_URL` names one (the variable Prefect's own client reads)."""
        import os

        from services.health import HealthService

        return HealthService(store=lambda: self._ctx.store, keyring=lambda: self._ctx.keyring,
                             limits_url=getattr(self._ctx, "limits_url", None),
                             prefect_api_url=os.environ.get("PREFECT_API_URL") or None)

    @cached_property
    def people(self) -> PeopleService:
        from services.people import PeopleService
        from services.throttle import SignInThrottle

        policy = self._ctx.access_policy
        return PeopleService(self._ctx.store, policy, control=self.access,
                             throttle=SignInThrottle.from_url(
                                 policy.sign_in, getattr(self._ctx, "limits_url", None)))

    @cached_property
    def court_list(self) -> CourtListService:
        """The licensed court-list copy: imports and status."""
        from policies.court_list import court_list_policy
        from services.court_list import CourtListService

        return CourtListService(self._ctx.store, self.access, court_list_policy())

    @cached_property
    def rescreen(self) -> RescreenService:
        """The whole-book re-screen against the list copy (`flows.rescreen` runs it)."""
        from policies.court_list import court_list_policy
        from services.rescreen import RescreenService

        return RescreenService(self._ctx.store, self.access, court_list_policy(),
                               self._ctx.notices)

    @cached_property
    def face(self) -> FaceService:
        """Face verification: start, the way back, the sweep of lost redirects, another way
        (an outreach request on the case, acting as idv on the applicant's choice)."""
        from services.face import FaceService
        settings = getattr(self._ctx, "settings", None)
        cases = self.cases
        system = Actor(name="system", role="operator")
        return FaceService(self._ctx.store, self._ctx.gate, self._ctx.vendor_contracts,
                           endpoints=getattr(self._ctx, "endpoints", {}),
                           limits=getattr(self._ctx, "call_limits", None),
                           timeout_s=getattr(settings, "vendor_timeout_s", 5.0),
                           max_attempts=getattr(settings, "vendor_max_attempts", 3),
                           another_way=lambda ref, _actor: cases.ask_another_way(
                               ref, actor=system))

    @cached_property
    def retention(self) -> RetentionService:
        from services.retention import RetentionService
        return RetentionService(self._ctx.store, self._ctx.retention_policy,
                                self._ctx.access_policy)

    @cached_property
    def requests(self) -> SubjectRequestService:
        from services.requests import SubjectRequestService
        return SubjectRequestService(self._ctx.store, self._ctx.request_policy, self.subjects,
                                     self.consent, self.explain)

    @cached_property
    def compliance(self) -> ComplianceService:
        from services.compliance import ComplianceService
        return ComplianceService(self._ctx.store, self._ctx.access_policy, self._ctx.notices,
                                 self.consent, checkpoint_dir=self._ctx.checkpoint_dir)

    @cached_property
    def cases(self) -> CaseService:
        from policies.catalog import case_policy
        from services.cases import CaseService

        policy = getattr(self._ctx, "case_policy", None) or case_policy()
        self._ctx.store.context.case_policy = policy
        return CaseService(self._ctx.store, self._ctx.access_policy, self._ctx.scorecard,
                           policy, subjects=self.subjects,
                           court_requery=getattr(self._ctx, "court_requery", None),
                           outreach_channel=getattr(self._ctx, "outreach_channel", None))

    @cached_property
    def applicant_self(self) -> ApplicantSelfService:
        """The applicant's own consents and requests, from the portal's session."""
        from services.applicant_self import ApplicantSelfService
        return ApplicantSelfService(self.consent, self.requests, self._ctx.consent_policy)

    @cached_property
    def links(self) -> LinkService:
        """The applicant portal's one-time links and sessions (`services.applicant_links`)."""
        from services.applicant_links import LinkService

        settings = getattr(self._ctx, "settings", None)
        key = getattr(settings, "applicant_link_key", None)
        return LinkService(
            self._ctx.store, self.access,
            key=(lambda: key.get_secret_value().encode("utf-8")) if key is not None else None,
            ttl_s=getattr(settings, "applicant_link_ttl_s", 86400),
            session_ttl_s=getattr(settings, "applicant_session_ttl_s", 7200),
            return_urls=getattr(settings, "applicant_return_urls", ()))

    @cached_property
    def portal(self) -> PortalService:
        """The applicant's journey in the portal: the layered notice, the grants and refusals,
        face, the receipts (`services.applicant_portal`)."""
        from policies.catalog import notice_texts
        from services.applicant_portal import PortalService

        return PortalService(self.links, self.consent, self.face, self._ctx.consent_policy,
                             self._ctx.notices, notice_texts(), oauth=self.oauth)
