"""The OpenAPI document, Swagger UI and ReDoc, their assets served from the package
(fastapi-offline's copies), so the pages work without internet. In production all three
need the bearer token; the assets are the libraries' own files and need none."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from idv.api.auth import authenticated

# Swagger UI's and ReDoc's scripts and styles, as fastapi-offline ships them.
_DOCS_ASSETS = "/docs-assets"
# The documentation pages load nothing from elsewhere: ReDoc's sidebar would fetch its
# vendor's logo from a CDN. Inline scripts and styles are the libraries' own; ReDoc searches
# in a blob: worker.
_DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
    "connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


def _offline(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = _DOCS_CSP
    return page


@router.get("/openapi.json")
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def swagger(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return _offline(
        get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title=f"{request.app.title} - Swagger UI",
            swagger_js_url=f"{root}{_DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{_DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{_DOCS_ASSETS}/favicon.png",
            # Swagger UI would otherwise send the document to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return _offline(
        get_redoc_html(
            openapi_url=f"{root}/openapi.json",
            title=f"{request.app.title} - ReDoc",
            redoc_js_url=f"{root}{_DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{_DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
    )


def mount(app: FastAPI, *, production: bool) -> None:
    """The assets and the three routes (behind the bearer token in production)."""
    assets = resources.files("fastapi_offline") / "static"
    app.mount(_DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
    app.include_router(router, dependencies=[Depends(authenticated)] if production else [])
