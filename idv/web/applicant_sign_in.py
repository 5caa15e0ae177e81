"""Signing in to the applicant's self-service with WeChat (`/applicant/self/sign-in...`),
beside the lender's one-time link: the person proves control of the WeChat account they
authorized during their journey, and gets the same portal session (cookie) a link gives.

`GET /applicant/self/sign-in` is the page with the "用微信登录 Sign in with WeChat" button (a
link, no script); `GET /applicant/self/sign-in/wechat` starts WeChat's web authorization
(`PortalService.wechat_sign_in_url`: a single-use state bound to this browser's cookie, no
applicant named anywhere) and redirects to WeChat; WeChat sends the browser back to
`GET /applicant/self/sign-in/back`, where the service checks the state, exchanges the code
server-side and finds the one applicant whose linked account has that unionid
(`PortalService.wechat_sign_in`). Found: the portal's cookie, as `/applicant/l/...` sets it,
and a redirect to `/applicant/self`. Anything else gets the self-service pages' refusal of a
bad link, whatever was wrong, so it never tells whether the person is known. The pages are
the self-service's (`idv.web.portal` for what they share)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from idv.deps import Svc, needs, runtime_of
from idv.oauth import BROWSER_COOKIE, new_browser_id
from idv.web import portal
from idv.web.auth import secure_cookies
from idv.web.portal import page
from idv.web.render import HEADERS
from services.applicant_links import COOKIE
from services.errors import ServiceError

router = APIRouter(include_in_schema=False)
SIGN_IN = "/applicant/self/sign-in"
BACK = SIGN_IN + "/back"
SELF = "/applicant/self"


def _refused(request: Request, exc: ServiceError) -> Response:
    """The self-service pages' own refusals (a bad link's page for a sign-in refused)."""
    return portal.refused(
        request,
        exc,
        link_page="applicant/self_refused.html",
        error_page="applicant/self_error.html",
    )


@router.get(SIGN_IN, openapi_extra=needs("public"))
def sign_in_page(request: Request) -> Response:
    """The sign-in page: one button, to WeChat."""
    return page(request, "applicant/self_sign_in.html")


@router.get(SIGN_IN + "/wechat", openapi_extra=needs("public"))
async def wechat_start(request: Request, services: Svc) -> Response:
    """302 to WeChat's authorize page with a fresh state bound to this browser's cookie
    (path: the sign-in's own, so the journey's WeChat step never sees it)."""
    browser = request.cookies.get(BROWSER_COOKIE) or new_browser_id()
    try:
        url = await run_in_threadpool(services.portal.wechat_sign_in_url, browser, BACK)
    except ServiceError as exc:
        return _refused(request, exc)
    answer = Response(status_code=302, headers={**HEADERS, "Location": url})
    answer.set_cookie(
        BROWSER_COOKIE,
        browser,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
        path=SIGN_IN,
        max_age=runtime_of(request).settings.oauth_state_ttl_s * 2,
    )
    return answer


@router.get(BACK, openapi_extra=needs("public"))
async def wechat_back(request: Request, services: Svc) -> Response:
    """WeChat's callback: the session of the one applicant with that unionid, or the
    refusal a bad link gets."""
    try:
        opened = await run_in_threadpool(
            services.portal.wechat_sign_in,
            request.query_params.get("code"),
            request.query_params.get("state"),
            request.cookies.get(BROWSER_COOKIE),
        )
    except ServiceError as exc:
        return _refused(request, exc)
    done = portal.redirect(SELF)
    done.set_cookie(
        COOKIE,
        opened.cookie.get_secret_value(),
        max_age=opened.max_age_s,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
        path="/applicant",
    )
    done.delete_cookie(BROWSER_COOKIE, path=SIGN_IN)
    return done
