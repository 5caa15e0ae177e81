"""The language toggle (`/web/lang/{code}`): the person's choice of zh or en for the pages'
messages, kept in a cookie (`idv.web.messages.LANG_COOKIE`) for a year, then back to the page
they came from (this site's only)."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from idv.web.auth import needs, secure_cookies
from idv.web.messages import LANG_COOKIE, LANGUAGES
from idv.web.render import HEADERS

router = APIRouter(include_in_schema=False)
YEAR_S = 365 * 24 * 3600


def back_to(request: Request) -> str:
    """The page the toggle was pressed on, when it is one of this site's pages."""
    came = urlsplit(request.headers.get("referer", ""))
    if came.netloc and came.netloc != request.url.netloc:
        return "/web/"
    if not came.path.startswith("/web/") or "//" in came.path:
        return "/web/"
    return came.path + (f"?{came.query}" if came.query else "")


@router.get("/web/lang/{code}", openapi_extra=needs("public"))
def choose(request: Request, code: str) -> RedirectResponse:
    answer = RedirectResponse(back_to(request), status_code=303, headers=HEADERS)
    if code in LANGUAGES:
        answer.set_cookie(
            LANG_COOKIE,
            code,
            max_age=YEAR_S,
            httponly=True,
            samesite="lax",
            secure=secure_cookies(request),
            path="/",
        )
    return answer
