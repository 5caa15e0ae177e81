"""The applicant-facing OAuth dance (HTML pages, no bearer token: a browser follows it) and
the lender-facing account calls (bearer token), over `services.oauth`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, StringConstraints, WithJsonSchema

from flows.runtime import Runtime
from idv.api.auth import Actor
from idv.api.params import GUARDED, READS_BODY, Rt, SubjectRef, Svc, needs
from idv.oauth import (
    BROWSER_COOKIE,
    PORTAL_COOKIE,
    confirmation_page,
    error_page,
    new_browser_id,
)
from idv.openapi import (
    PAGE_HEADERS,
    WHY,
    answers,
    json_answers,
)
from policies.vocabulary import APPLICANT_REF_SCHEMA, ApplicantRef, check_applicant_ref
from services.accounts import SubjectAccounts
from services.oauth import (
    WECHAT_SCOPES,
    Linked,
    OAuthFailure,
    PhoneAnswer,
    StartLinkAnswer,
)

router = APIRouter(tags=["oauth"])
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_REDIRECT = {
    "description": WHY[302],
    "headers": {
        "Location": {"schema": {"type": "string", "format": "uri"}, "required": True},
        **PAGE_HEADERS,
    },
}


class PhoneExchange(BaseModel):
    """A Mini Program's one-time phone code, posted by the lender's back end."""

    model_config = ConfigDict(extra="forbid")

    applicant_ref: ApplicantRef
    code: Annotated[str, StringConstraints(min_length=1, max_length=512)]


# A ref on a page a browser follows: documented with the vocabulary's rule, checked by the
# route so that a malformed one gets an error page rather than JSON.
PageRef = Annotated[str, Query(json_schema_extra=APPLICANT_REF_SCHEMA)]
# WeChat's two scopes; any other gets an error page (400 `invalid_scope`).
WechatScope = Annotated[
    str | None, Query(), WithJsonSchema({"type": "string", "enum": list(WECHAT_SCOPES)})
]
# An OpenID provider's name as `IDV_OIDC_PROVIDERS` spells it; any other is 404.
ProviderName = Annotated[str, PathParam(json_schema_extra={"pattern": r"^[a-z0-9_-]{1,32}$"})]


class StartLink(BaseModel):
    model_config = ConfigDict(extra="forbid")

    applicant_ref: ApplicantRef
    provider: Annotated[str, StringConstraints(pattern=r"^(wechat|oidc:[a-z0-9_-]{1,32})$")]
    scope: Literal["snsapi_base", "snsapi_userinfo"] | None = None


def _failed(failure: OAuthFailure) -> HTMLResponse:
    return HTMLResponse(error_page(failure), status_code=failure.status, headers=_HEADERS)


def _start(
    rt: Runtime, request: Request, applicant_ref: str, make_url: Callable[[str], str]
) -> Response:
    """The redirect to the provider, with the browser's cookie; an error page instead."""
    rule = check_applicant_ref(applicant_ref)
    if rule is not None:
        return _failed(
            OAuthFailure("invalid_request", f"applicant_ref: {rule}", field="applicant_ref")
        )
    browser = request.cookies.get(BROWSER_COOKIE) or new_browser_id()
    try:
        url = make_url(browser)
    except OAuthFailure as failure:
        return _failed(failure)
    response = RedirectResponse(url, status_code=302, headers=_HEADERS)
    response.set_cookie(
        BROWSER_COOKIE,
        browser,
        httponly=True,
        samesite="lax",
        secure=rt.settings.env == "production",
        path="/oauth",
        max_age=rt.settings.oauth_state_ttl_s * 2,
    )
    return response


def _finish(run: Callable[[], Linked], *, portal: bool = False) -> HTMLResponse:
    """The confirmation page (in the applicant portal's words when `portal`), or an error
    page."""
    try:
        linked = run()
    except OAuthFailure as failure:
        return _failed(failure)
    except Exception as exc:  # no traceback: library messages may carry the values given
        logging.getLogger("idv.oauth").error("oauth callback failed: %s", type(exc).__name__)
        return _failed(
            OAuthFailure(
                "internal_error",
                "The authorization could not be "
                "stored; nothing stands as consented. Try again later.",
                status=500,
            )
        )
    return HTMLResponse(confirmation_page(linked, portal=portal), headers=_HEADERS)


@router.post(
    "/oauth/links",
    openapi_extra=needs("authenticated"),
    response_model=StartLinkAnswer,
    responses=answers(*READS_BODY, 404),
)
def link(req: StartLink, request: Request, _actor: Actor, svc: Svc) -> StartLinkAnswer:
    """The link to send an applicant to, signed and expiring when IDV_OAUTH_LINK_KEY is
    set. `provider` is `wechat` or `oidc:<name>`; 404 for a provider not configured."""
    return svc.oauth.start_link(str(request.base_url), req.provider, req.applicant_ref, req.scope)


@router.get(
    "/oauth/wechat/authorize",
    openapi_extra=needs("public"),
    response_class=RedirectResponse,
    status_code=302,
    responses={302: _REDIRECT, **answers(pages=(400, 403, 503)), **json_answers(422)},
)
def wechat_authorize(
    request: Request,
    applicant_ref: PageRef,
    rt: Rt,
    svc: Svc,
    scope: WechatScope = None,
    exp: str | None = None,
    sig: str | None = None,
) -> Response:
    """302 to WeChat's authorize page with a fresh single-use state; an error page (400
    a malformed ref or scope, 403 an unsigned, altered or old link, 503 WeChat not
    configured)."""
    return _start(
        rt,
        request,
        applicant_ref,
        lambda b: svc.oauth.wechat_authorize_url(applicant_ref, scope, b, exp=exp, sig=sig),
    )


@router.get(
    "/oauth/wechat/callback",
    openapi_extra=needs("public"),
    response_class=HTMLResponse,
    responses={200: {"headers": PAGE_HEADERS}, **answers(pages=(400, 403, 502, 503, 504))},
)
def wechat_callback(
    request: Request, svc: Svc, code: str | None = None, state: str | None = None
) -> HTMLResponse:
    """Check the state, exchange the code, record the consent, store the tokens sealed;
    the confirmation page, or an error page (400 a wrong state or refused code, 403
    declined)."""
    return _finish(
        lambda: svc.oauth.wechat_callback(code, state, request.cookies.get(BROWSER_COOKIE)),
        portal=request.cookies.get(PORTAL_COOKIE) == "1",
    )


@router.get(
    "/oauth/oidc/{provider}/authorize",
    openapi_extra=needs("public"),
    response_class=RedirectResponse,
    status_code=302,
    responses={302: _REDIRECT, **answers(pages=(400, 403, 404, 502, 504)), **json_answers(422)},
)
def oidc_authorize(
    request: Request,
    provider: ProviderName,
    applicant_ref: PageRef,
    rt: Rt,
    svc: Svc,
    exp: str | None = None,
    sig: str | None = None,
) -> Response:
    """302 to the provider with state, nonce and a PKCE S256 challenge; an error page
    (404 a provider not configured, 502/504 its metadata unusable or unreachable)."""
    return _start(
        rt,
        request,
        applicant_ref,
        lambda b: svc.oauth.oidc_authorize_url(provider, applicant_ref, b, exp=exp, sig=sig),
    )


@router.get(
    "/oauth/oidc/{provider}/callback",
    openapi_extra=needs("public"),
    response_class=HTMLResponse,
    responses={200: {"headers": PAGE_HEADERS}, **answers(pages=(400, 403, 404, 502, 504))},
)
def oidc_callback(request: Request, provider: ProviderName, svc: Svc) -> HTMLResponse:
    """Check the state, exchange the code with the verifier, validate the ID token."""
    params = {k: v for k, v in request.query_params.items() if k in ("code", "state", "error")}
    return _finish(
        lambda: svc.oauth.oidc_callback(provider, params, request.cookies.get(BROWSER_COOKIE))
    )


@router.post(
    "/oauth/wechat/phone",
    openapi_extra=needs("authenticated"),
    response_model=PhoneAnswer,
    responses=answers(*READS_BODY, 403, 502, 503, 504),
)
def wechat_phone(req: PhoneExchange, actor: Actor, svc: Svc) -> PhoneAnswer:
    """Exchange a Mini Program's phone code for the bound phone (kept as a blind index),
    under the applicant's separate `wechat_phone` consent (403 `no_consent` without it:
    the gate decides, and records its decision, before anything is sent)."""
    return svc.oauth.wechat_phone(req.applicant_ref, req.code, actor=actor.name)


@router.get(
    "/subjects/{applicant_ref}/accounts",
    openapi_extra=needs("authenticated"),
    response_model=SubjectAccounts,
    responses=answers(*GUARDED, 404),
)
def accounts(applicant_ref: SubjectRef, _actor: Actor, svc: Svc) -> SubjectAccounts:
    """The applicant's authorized accounts: status, dates, whether tokens are held; 404
    for a subject of whom nothing is held."""
    return svc.accounts.view(applicant_ref)
