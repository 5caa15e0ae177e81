"""The applicant portal's links and sessions: how a person gets into their own journey, and
how every portal page knows whom it serves.

Use it this way:

- The lender's back end asks `LinkService.issue(LinkRequest(applicant_ref=..., journey=...,
  return_url=...), actor=...)` (`run` permission; `POST /applicant-links`). It gets a
  one-time link `/applicant/l/<link_id>?e=<expiry>&s=<sig>`: the link id is random (the
  applicant ref is never in a URL), the signature an HMAC-SHA256 over the id and the expiry
  under the key `IDV_APPLICANT_LINK_KEY` or, unset, the ring secret `applicant-link-signing`.
  Default lifetime 24 h (`IDV_APPLICANT_LINK_TTL_S`). Asking again for the same applicant
  and journey resumes: a new one-time link into the same session (one session per applicant
  ref and journey, never a second).
- The browser opens it: `open(link_id, e, s)` checks the signature, the expiry and that the
  link was never used, marks it used and hands back a random cookie (only its SHA-256 is
  kept) that holds the session for `IDV_APPLICANT_SESSION_TTL_S` (default 2 h). A link that
  is altered, expired, reused or made of another link's parts is refused alike
  (`LinkRefused`, field `link`), and nothing is written for it.
- Or the person signs in (`sign_in(applicant_ref, via=...)`, once the caller has proven who
  they are: `services.applicant_portal.PortalService.wechat_sign_in`): their `self_service`
  session, a new cookie as a link gives.
- Every later page calls `session_of(cookie)`: the `PortalSession` (its `applicant_ref`,
  `journey`, `step`, `status`) of a valid cookie, or `LinkRefused`. This is the one check a
  portal page makes before it acts for an applicant (the self-service pages too).
- The lender's return URL must start with one of `IDV_APPLICANT_RETURN_URLS` (scheme, host
  and port equal, path under the listed one, no query or fragment: idv adds its own). The
  way back to it is signed (`return_to`): `?idv_session=<session id>&idv_state=<state>&
  idv_sig=<HMAC>`, which the lender checks with the same key (`verify_return`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr

from policies.vocabulary import ApplicantRef
from services.access import AccessControl
from services.context import Actor
from services.errors import Denied, InvalidInput
from services.subjects import require_ref
from storage.portal import PortalSession
from storage.store import Store

__all__ = [
    "COOKIE",
    "JOURNEYS",
    "IssuedLink",
    "LinkRefused",
    "LinkRequest",
    "LinkService",
    "OpenedLink",
    "PortalSession",
    "SELF_SERVICE",
]

# The journeys a link may start, and their steps in order. `consents`: the general notice
# and one enhanced notice per sensitive use, each with its own switch; `wechat`: WeChat
# authorization; `face`: face verification (or another way); `done`: the end, with the
# receipts.
Journey = Literal["onboarding", "re_consent", "face_recheck"]
JOURNEYS: dict[str, tuple[str, ...]] = {
    "onboarding": ("consents", "wechat", "face", "done"),
    "re_consent": ("consents", "done"),
    "face_recheck": ("consents", "face", "done"),
}
# The session a person opens by signing in (`sign_in`) rather than by a link: self-service,
# with nothing of a journey left to do but the done page's receipts. No link starts it.
SELF_SERVICE = "self_service"
JOURNEYS[SELF_SERVICE] = ("done",)
# The browser's cookie that holds a portal session (HttpOnly, SameSite=Lax, path /applicant).
COOKIE = "idv_applicant"
# The ring secret that signs links and the way back when no key is configured.
LINK_KEY = "applicant-link-signing"
# Link ids and cookies: 18 and 32 random bytes, URL-safe base64 (24 and 43 characters).
_LINK_ID_BYTES = 18
_COOKIE_BYTES = 32
_LINK_ID_LEN = 24
_SIG_LEN = 43  # an HMAC-SHA256, URL-safe base64 without padding
_COOKIE_MAX = 64
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
REFUSED_RULE = "is not a valid link: it was altered, has expired or was used; ask for a new one"


class LinkRefused(Denied):
    """A link or cookie that does not hold: the same refusal whatever the reason, so that a
    refusal says nothing about which links exist."""

    def __init__(self) -> None:
        super().__init__("link", REFUSED_RULE)


class LinkRequest(BaseModel):
    """What the lender's back end asks a link for."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "applicant_ref": "A-000123",
                    "journey": "onboarding",
                    "return_url": "https://app.lender.example/idv/back",
                }
            ]
        },
    )

    applicant_ref: ApplicantRef
    journey: Journey = "onboarding"
    return_url: AnyHttpUrl | None = None
    ttl_s: int | None = Field(None, ge=60, le=7 * 86400)


class IssuedLink(BaseModel):
    """A link to hand to the applicant (`path`, relative to idv's public origin; `url` when
    the surface knows that origin), its opaque ids and expiry, and whether it resumes a
    session that already existed. No personal value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    url: str | None = None
    link_id: str
    session_id: str
    journey: str
    expires_at: datetime
    resumed: bool


class OpenedLink(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cookie: SecretStr
    max_age_s: int
    session: PortalSession


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _shaped(value: object, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and set(value) <= _B64URL


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("ascii")).hexdigest()


def check_return_url(url: str, allowed: Sequence[str]) -> None:
    """`InvalidInput` (field `return_url`) unless `url` is under one of the allowed prefixes:
    the same scheme, host and port, its path under the prefix's, no user info, query or
    fragment (a return URL carries nothing of the applicant's; idv adds its own fields)."""
    try:
        got = urlsplit(url)
        port = got.port
    except ValueError:
        raise InvalidInput("return_url", "is not a URL") from None
    if got.scheme not in ("https", "http") or not got.hostname:
        raise InvalidInput("return_url", "must be an absolute http(s) URL")
    if got.username or got.password or got.query or got.fragment:
        raise InvalidInput("return_url", "must carry no user, query or fragment")
    for prefix in allowed:
        want = urlsplit(prefix)
        if (
            want.scheme == got.scheme
            and want.hostname == got.hostname
            and want.port == port
            and (got.path or "/").startswith(want.path or "/")
        ):
            return
    raise InvalidInput("return_url", "is not on the allow-list (IDV_APPLICANT_RETURN_URLS)")


class LinkService:
    """Links and sessions over the store; `key` gives the signing key when called (never at
    import or construction: a key is read when it is used)."""

    def __init__(
        self,
        store: Store,
        access: AccessControl,
        *,
        key: Callable[[], bytes] | None = None,
        ttl_s: int = 86400,
        session_ttl_s: int = 7200,
        return_urls: Sequence[str] = (),
    ) -> None:
        self.store = store
        self.access = access
        self._key = key or (lambda: store.keyring.secret(LINK_KEY))
        self.ttl_s = ttl_s
        self.session_ttl_s = session_ttl_s
        self.return_urls = tuple(return_urls)

    def _mac(self, *parts: str) -> str:
        message = "\x00".join(parts).encode("utf-8")
        return _b64(hmac.new(self._key(), message, hashlib.sha256).digest())

    # -- the lender's side ----------------------------------------------------------------

    def issue(self, req: LinkRequest, *, actor: Actor) -> IssuedLink:
        """A one-time link for the applicant's journey (see the module). `InvalidInput`
        naming `return_url` for one off the allow-list; `Denied` without `run`."""
        require_ref(req.applicant_ref)
        self.access.require(actor, "run", operation="applicant.link")
        return_url = str(req.return_url) if req.return_url is not None else None
        if return_url is not None:
            check_return_url(return_url, self.return_urls)
        now = self.store.clock()
        expires = now + timedelta(seconds=req.ttl_s or self.ttl_s)
        link_id = secrets.token_urlsafe(_LINK_ID_BYTES)
        session, created = self.store.portal.issue(
            applicant_ref=req.applicant_ref,
            journey=req.journey,
            first_step=JOURNEYS[req.journey][0],
            new_session_id="as_" + secrets.token_hex(16),
            link_id=link_id,
            expires_at=expires,
            return_url=return_url,
            actor=actor.name,
        )
        exp = str(int(expires.timestamp()))
        return IssuedLink(
            path=f"/applicant/l/{link_id}?"
            + urlencode({"e": exp, "s": self._mac("link", link_id, exp)}),
            link_id=link_id,
            session_id=session.session_id,
            journey=session.journey,
            expires_at=expires,
            resumed=not created,
        )

    # -- the applicant's side -------------------------------------------------------------

    def open(self, link_id: object, exp: object, sig: object) -> OpenedLink:
        """Use a link once (see the module); `LinkRefused` for any link that does not hold."""
        if not (_shaped(link_id, _LINK_ID_LEN) and _shaped(sig, _SIG_LEN)):
            raise LinkRefused()
        if not (isinstance(exp, str) and exp.isdigit() and len(exp) <= 12):
            raise LinkRefused()
        assert isinstance(link_id, str) and isinstance(sig, str)
        if not hmac.compare_digest(self._mac("link", link_id, exp), sig):
            raise LinkRefused()
        now = self.store.clock()
        if int(exp) <= now.timestamp():
            raise LinkRefused()
        cookie = secrets.token_urlsafe(_COOKIE_BYTES)
        session = self.store.portal.open(
            link_id,
            cookie_sha256=_digest(cookie),
            cookie_expires_at=now + timedelta(seconds=self.session_ttl_s),
        )
        if session is None:
            raise LinkRefused()
        return OpenedLink(cookie=SecretStr(cookie), max_age_s=self.session_ttl_s, session=session)

    def sign_in(self, applicant_ref: str, *, via: str) -> OpenedLink:
        """Open the applicant's self-service session for a browser, the person proven by
        `via` (`wechat`: the account they linked) rather than by a link: a new random cookie
        (only its SHA-256 kept), for `session_ttl_s`, as a link gives. The caller has
        established who the person is; recorded as `applicant.signed_in`."""
        require_ref(applicant_ref)
        now = self.store.clock()
        cookie = secrets.token_urlsafe(_COOKIE_BYTES)
        session = self.store.portal.sign_in(
            applicant_ref=applicant_ref,
            journey=SELF_SERVICE,
            first_step=JOURNEYS[SELF_SERVICE][0],
            new_session_id="as_" + secrets.token_hex(16),
            cookie_sha256=_digest(cookie),
            cookie_expires_at=now + timedelta(seconds=self.session_ttl_s),
            via=via,
        )
        return OpenedLink(cookie=SecretStr(cookie), max_age_s=self.session_ttl_s, session=session)

    def session_of(self, cookie: str | None) -> PortalSession:
        """The session a request's cookie holds: its applicant ref, journey, step and status;
        `LinkRefused` for no cookie, an unknown one, one replaced by a newer link or run out.
        The portal's pages call this before anything else."""
        if not (isinstance(cookie, str) and 0 < len(cookie) <= _COOKIE_MAX):
            raise LinkRefused()
        if not set(cookie) <= _B64URL:
            raise LinkRefused()
        session = self.store.portal.by_cookie(_digest(cookie))
        if session is None:
            raise LinkRefused()
        return session

    def move(self, session: PortalSession, step: str, *, done: bool = False) -> PortalSession:
        """Record that the session reached `step` of its journey (`done`: it ended)."""
        if step not in JOURNEYS[session.journey]:
            raise InvalidInput("step", "is not a step of this journey")
        return self.store.portal.move(session.session_id, step, done=done)

    # -- the way back to the lender -------------------------------------------------------

    def return_to(self, session: PortalSession, state: str) -> str | None:
        """The lender's return URL with the session's opaque id, the state (`done`,
        `left`) and their signature; None when the lender gave none."""
        if session.return_url is None:
            return None
        fields = {"idv_session": session.session_id, "idv_state": state}
        sig = self._mac("return", session.session_id, state)
        return session.return_url + "?" + urlencode({**fields, "idv_sig": sig})

    def verify_return(self, url: str) -> bool:
        """Whether a way back is one idv signed (what the lender checks before trusting it)."""
        fields = dict(parse_qsl(urlsplit(url).query))
        session, state, sig = (fields.get(k, "") for k in ("idv_session", "idv_state", "idv_sig"))
        if not (session and state and sig):
            return False
        return hmac.compare_digest(self._mac("return", session, state), sig)
