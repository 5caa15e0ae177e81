"""The applicant's journey in the portal, after `services.applicant_links` has told whose
session a request holds: the notice in layers, each sensitive use asked for on its own, face
verification (or another way) and the receipts.

- `consent_page(session)`: the general notice of the version in force (the newest published
  notice that tells of the identity check), then per sensitive use of the journey its
  enhanced notice (the general notice's item on that use; the face notice for face), each
  with its own switch, none on. A use with a live grant is shown as granted; a use refused
  in the last 48 h is not asked again (shown with the time it may be asked).
- `answer(session, ...)`: the switches as sent. Every grant is checked against the policy and
  the notice before anything is written (nothing half-recorded); then each one on is a grant
  through `ConsentService.grant` (channel `applicant_portal`, evidence the SHA-256 of the
  exact enhanced text shown, the notice version and its hash) linked to its ask, each one
  off is a refused ask (`ConsentService.ask`), so the authorization-rate statistics count
  both per notice version and use; one `applicant.consents_answered` event records the
  texts' hashes, the outcome per use, the surface (`via=applicant`) and the device facts.
  Refusing any use never stops the journey.
- `start_face`, `face_back`, `another_way`: the face step through `FaceService`; "verify
  another way" is always offered.
- `wechat_sign_in_url`, `wechat_sign_in`: a person signs in to their self-service with
  WeChat (the account they linked in the journey) instead of a link.
- `receipts(session)`, `receipt(session, consent_id)`: the grants made in the portal and
  each one's signed receipt (`ConsentService.signed_receipt`), with the proof of the text
  shown (the evidence hash and the notice's hash).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict

from policies.consent import ConsentPolicy, GrantRuleError, check_grant, grant_state
from policies.notices import Notice
from services.applicant_links import (
    JOURNEYS,
    LinkRefused,
    LinkService,
    OpenedLink,
    PortalSession,
)
from services.consent import AskRequest, ConsentService, GrantRequest, SignedReceipt
from services.context import APPLICANT
from services.errors import InvalidInput, NotFound
from services.face import AnotherWay, FaceResult, FaceService, FaceStart
from services.oauth import OAuthFailure, OAuthService

CHANNEL = "applicant_portal"
PURPOSE = "onboarding_verification"
# A refused use is not asked again for this long (the person's no is respected).
QUIET = timedelta(hours=48)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")  # a hex SHA-256, as the form sends it back


@dataclass(frozen=True)
class Use:
    """A sensitive use asked for on its own: its scope and where its enhanced text is (the
    general notice's numbered item starting with `item`, or a notice of its own)."""

    name: str
    scope: str
    item: str | None = None


USES: tuple[Use, ...] = (
    Use("id_check", "id_verification", "身份核验"),
    Use("carrier_check", "carrier_check", "运营商核验"),
    Use("court_list", "court_records", "司法信息"),
    Use("credit_bureau", "credit_report", "征信信息"),
    Use("wechat_account", "wechat_profile", "微信账户"),
    Use("face", "face_verification"),
)
JOURNEY_USES: dict[str, tuple[str, ...]] = {
    "onboarding": tuple(u.name for u in USES),
    "re_consent": tuple(u.name for u in USES),
    "face_recheck": ("face",),
}


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UseView(Answer):
    use: str
    scope: str
    optional: bool
    notice_version: str
    text: str
    text_sha256: str
    state: str  # ask | granted | refused (in the last 48 h: not asked again)
    ask_again_at: datetime | None = None


class ConsentPage(Answer):
    notice_version: str
    notice_text: str
    notice_sha256: str
    uses: list[UseView]


class UseOutcome(Answer):
    use: str
    scope: str
    outcome: str  # granted | refused
    text_sha256: str
    consent_id: str | None = None


class ConsentAnswers(Answer):
    notice_version: str
    outcomes: list[UseOutcome]
    next_step: str


class DeviceFacts(Answer):
    """What the notice says is kept of the device: coarse facts, never the raw user agent."""

    in_wechat: bool
    mobile: bool
    language: str
    user_agent_sha256: str


class ReceiptLine(Answer):
    consent_id: str
    scopes: list[str]
    state: str
    notice_version: str
    notice_hash: str
    evidence: str
    granted_at: str


def device_facts(user_agent: str | None, language: str) -> DeviceFacts:
    ua = (user_agent or "")[:512]
    return DeviceFacts(
        in_wechat="MicroMessenger" in ua,
        mobile="Mobile" in ua,
        language=language if language in ("zh", "en") else "zh",
        user_agent_sha256=hashlib.sha256(ua.encode("utf-8")).hexdigest(),
    )


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class PortalService:
    """The journey's operations, over the link service (whose session), the consent ledger's
    service, the face service and the shipped notices and their texts."""

    def __init__(
        self,
        links: LinkService,
        consent: ConsentService,
        face: FaceService,
        policy: ConsentPolicy,
        notices: Mapping[str, Notice],
        texts: Mapping[str, str],
        oauth: OAuthService | None = None,
    ) -> None:
        self.oauth = oauth
        self.links = links
        self.consent = consent
        self.face = face
        self.policy = policy
        self.notices = notices
        self.texts = texts
        self.store = consent.store

    # -- the notices ----------------------------------------------------------------------

    def _in_force(self, scope: str) -> Notice:
        today = self.store.clock().date()
        fitting = [
            n
            for n in self.notices.values()
            if n.covers(PURPOSE, scope) and n.published <= today and n.version in self.texts
        ]
        if not fitting:
            raise NotFound("notice_version", "no published notice tells of this use")
        return max(fitting, key=lambda n: n.published)

    def general_notice(self) -> Notice:
        """The general notice in force: the newest published one that tells of the ID check."""
        return self._in_force("id_verification")

    def enhanced_text(self, use: Use, general: Notice) -> tuple[Notice, str]:
        """The notice a use is granted under and its enhanced text, exactly as shown."""
        if use.item is None:
            notice = self._in_force(use.scope)
            return notice, self.texts[notice.version]
        for line in self.texts[general.version].splitlines():
            if re.match(r"^\d+\.\s*" + re.escape(use.item), line.strip()):  # "1. 身份核验..."
                return general, line.strip()
        raise NotFound("notice_version", f"the notice in force has no item on {use.name}")

    def _states(self, ref: str) -> tuple[set[str], dict[str, datetime]]:
        now = self.store.clock()
        live = {
            s
            for g in self.store.ledger.grants_for(ref)
            if g.purpose == PURPOSE and grant_state(g, now) == "live"
            for s in g.scopes
        }
        quiet: dict[str, datetime] = {}
        for ask in self.store.ledger.asks_for(ref):
            at = datetime.fromisoformat(ask["asked_at"])
            if ask["outcome"] == "refused" and at + QUIET > now:
                for s in ask["scopes"]:
                    quiet[s] = max(quiet.get(s, at + QUIET), at + QUIET)
        return live, quiet

    def consent_page(self, session: PortalSession) -> ConsentPage:
        """The general notice and the enhanced notice of each use of the journey (see the
        module)."""
        general = self.general_notice()
        live, quiet = self._states(session.applicant_ref)
        views = []
        for use in USES:
            if use.name not in JOURNEY_USES[session.journey]:
                continue
            notice, text = self.enhanced_text(use, general)
            state = "granted" if use.scope in live else "refused" if use.scope in quiet else "ask"
            views.append(
                UseView(
                    use=use.name,
                    scope=use.scope,
                    optional=self.policy.scopes[use.scope].optional,
                    notice_version=notice.version,
                    text=text,
                    text_sha256=_sha(text),
                    state=state,
                    ask_again_at=quiet.get(use.scope) if state == "refused" else None,
                )
            )
        return ConsentPage(
            notice_version=general.version,
            notice_text=self.texts[general.version],
            notice_sha256=general.text_sha256,
            uses=views,
        )

    # -- the answers ----------------------------------------------------------------------

    def answer(
        self,
        session: PortalSession,
        *,
        notice_version: str,
        switched_on: frozenset[str],
        shown: Mapping[str, str],
        device: DeviceFacts,
    ) -> ConsentAnswers:
        """Record the switches (see the module). `InvalidInput` naming the field, before
        anything is written: `notice_version` (not the published notice in force), `use`
        (a use this page did not ask), `shown.<use>` (not the hash of the text shown)."""
        page = self.consent_page(session)
        if notice_version != page.notice_version:
            raise InvalidInput("notice_version", "is not the published notice in force")
        asked = [u for u in page.uses if u.state == "ask"]
        if not switched_on <= {u.use for u in asked}:
            raise InvalidInput("use", "is not a use this page asks for")
        for view in asked:
            sent = shown.get(view.use)
            if not (isinstance(sent, str) and _SHA256.match(sent)) or sent != view.text_sha256:
                raise InvalidInput(f"shown.{view.use}", "is not the text this page shows")
        requests = {v.use: self._grant_request(session, v) for v in asked if v.use in switched_on}
        outcomes = [self._record(session, v, requests.get(v.use)) for v in asked]
        self.store.audit.record(
            "applicant.consents_answered",
            session.applicant_ref,
            {
                "session_id": session.session_id,
                "journey": session.journey,
                "via": "applicant",
                "channel": CHANNEL,
                "notice_version": page.notice_version,
                "notice_sha256": page.notice_sha256,
                "uses": [o.model_dump() for o in outcomes],
                "device": device.model_dump(),
            },
        )
        steps = JOURNEYS[session.journey]
        nxt = steps[steps.index("consents") + 1]
        self.links.move(session, nxt, done=nxt == "done")
        return ConsentAnswers(notice_version=page.notice_version, outcomes=outcomes, next_step=nxt)

    def _grant_request(self, session: PortalSession, view: UseView) -> GrantRequest:
        notice = self.notices[view.notice_version]
        req = GrantRequest(
            subject_ref=session.applicant_ref,
            purpose=PURPOSE,
            scopes=frozenset({view.scope}),
            notice_version=notice.version,
            notice_hash=notice.text_sha256,
            channel=CHANNEL,
            evidence=f"sha256:{view.text_sha256}",
        )
        now = self.store.clock()
        try:  # the policy's and the notice's rules, before anything is written
            check_grant(
                self.policy,
                self.notices,
                purpose=PURPOSE,
                scopes=req.scopes,
                notice_version=notice.version,
                notice_hash=notice.text_sha256,
                granted_at=now,
                expires_at=now + timedelta(days=self.policy.purposes[PURPOSE].max_validity_days),
                now=now,
                field="consent",
            )
        except GrantRuleError as exc:
            raise InvalidInput(exc.field, exc.rule) from None
        return req

    def _record(
        self, session: PortalSession, view: UseView, req: GrantRequest | None
    ) -> UseOutcome:
        consent_id = None
        if req is not None:
            consent_id = self.consent.grant(req, actor=APPLICANT, via="subject").consent_id
        self.consent.ask(
            AskRequest(
                subject_ref=session.applicant_ref,
                purpose=PURPOSE,
                scopes=frozenset({view.scope}),
                notice_version=view.notice_version,
                channel=CHANNEL,
                outcome="granted" if consent_id else "refused",
                consent_id=consent_id,
            ),
            actor=APPLICANT,
        )
        return UseOutcome(
            use=view.use,
            scope=view.scope,
            outcome="granted" if consent_id else "refused",
            text_sha256=view.text_sha256,
            consent_id=consent_id,
        )

    # -- the other steps ------------------------------------------------------------------

    def step(self, session: PortalSession, step: str) -> PortalSession:
        """Go to `step` of the journey; `NotFound` (field `step`) for one it does not have."""
        if step not in JOURNEYS[session.journey]:
            raise NotFound("step", "is not a step of this journey")
        return self.links.move(session, step, done=step == "done")

    def wechat_ready(self, session: PortalSession) -> bool:
        """Whether the WeChat step has work: WeChat is configured and the applicant agreed to
        the WeChat account use."""
        if self.oauth is None or not self.oauth.config.wechat_appid:
            return False
        live, _ = self._states(session.applicant_ref)
        return "wechat_profile" in live

    def wechat_url(self, session: PortalSession, browser: str) -> str:
        """WeChat's authorize page for the session's applicant (the state bound to the
        browser); its callback records the account under the applicant's grant."""
        if self.oauth is None or not self.wechat_ready(session):
            raise InvalidInput("wechat", "the WeChat account use is not agreed to")
        return self.oauth.wechat_authorize_url_for(session.applicant_ref, browser)

    def wechat_sign_in_url(self, browser: str, path: str) -> str:
        """WeChat's authorize page for a person signing in to their self-service (no session
        yet); WeChat comes back to `path` (`wechat_sign_in`)."""
        if self.oauth is None:
            raise LinkRefused()
        return self.oauth.wechat_sign_in_url(browser, path)

    def wechat_sign_in(
        self, code: str | None, state: str | None, browser: str | None
    ) -> OpenedLink:
        """WeChat's callback of a sign-in: the self-service session of the one applicant whose
        linked WeChat account has that unionid (`OAuthService.wechat_holders`). Anything else
        (a forged, replayed or expired state, a refused code, no such applicant, more than
        one, an account withdrawn or purged) is `LinkRefused`, the refusal a bad link gets,
        which says nothing of whether the person is known; it is recorded as
        `applicant.sign_in_refused` with its reason and no personal value. A provider that
        cannot be reached is its `OAuthFailure` (no session, no sign-in event)."""
        if self.oauth is None:
            raise LinkRefused()
        try:
            refs = self.oauth.wechat_holders(code, state, browser)
        except OAuthFailure as failure:
            if failure.status not in (400, 403):
                raise
            reason = failure.code
        else:
            if len(refs) == 1:
                return self.links.sign_in(refs[0], via="wechat")
            reason = "no_account" if not refs else "several_accounts"
        self.store.audit.record(
            "applicant.sign_in_refused", None, {"via": "wechat", "reason": reason}
        )
        raise LinkRefused()

    def face_allowed(self, session: PortalSession) -> bool:
        live, _ = self._states(session.applicant_ref)
        return "face_verification" in live

    def start_face(self, session: PortalSession, *, return_url: str) -> FaceStart:
        return self.face.start(session.applicant_ref, return_url=return_url, actor=APPLICANT)

    def face_back(self, session: PortalSession, token: str) -> FaceResult:
        return self.face.callback(token, applicant_ref=session.applicant_ref, actor=APPLICANT)

    def another_way(self, session: PortalSession) -> AnotherWay:
        return self.face.choose_another_way(session.applicant_ref, actor=APPLICANT)

    # -- receipts -------------------------------------------------------------------------

    def receipts(self, session: PortalSession) -> list[ReceiptLine]:
        """The grants made through the portal for this applicant, newest first."""
        now = self.store.clock()
        ref = session.applicant_ref
        grants = self.store.ledger.grants_for(ref)
        evidence = {
            e["consent_id"]: e["evidence_ref"] or ""
            for e in self.store.ledger.events_for(ref)
            if e["event"] == "grant"
        }
        return [
            ReceiptLine(
                consent_id=g.consent_id,
                scopes=sorted(g.scopes),
                state=grant_state(g, now),
                notice_version=g.notice_version,
                notice_hash=g.notice_hash,
                evidence=evidence.get(g.consent_id, ""),
                granted_at=g.granted_at.isoformat(),
            )
            for g in sorted(grants, key=lambda g: g.granted_at, reverse=True)
            if g.channel == CHANNEL
        ]

    def receipt(self, session: PortalSession, consent_id: str) -> SignedReceipt:
        """One of the applicant's grants' signed receipt; another's is no such grant."""
        return self.consent.signed_receipt(
            consent_id, actor=APPLICANT, own_subject=session.applicant_ref
        )
