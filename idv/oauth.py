"""The OAuth pages (`idv serve`): the confirmation and the error an applicant's browser lands
on. Plain HTML, masked values only, never a code, a token or an identifier in full."""

from __future__ import annotations

import html
import secrets

from services.oauth import Linked, OAuthFailure

BROWSER_COOKIE = "idv_oauth_browser"


# -- pages ------------------------------------------------------------------------------


def page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;"
        "max-width:36em;margin:3em auto;padding:0 1em}dt{font-weight:bold}"
        ".error{color:#a00}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


# Set by the applicant portal's WeChat step (path /oauth): the confirmation then leads back to
# the journey and names no applicant ref.
PORTAL_COOKIE = "idv_portal_back"


def confirmation_page(linked: Linked, *, portal: bool = False) -> str:
    if portal:
        return page(
            "授权成功 / Authorization recorded",
            (
                "<p id='result'>微信账户已授权，已证明账户由您本人控制。"
                "<br>Control of the WeChat account is proven.</p>"
                f"<dl><dt>账户 Account</dt><dd>{html.escape(linked.account)}</dd></dl>"
                "<p>您可以随时撤回此项同意。You can withdraw this consent at any time.</p>"
                "<p><a id='back' href='/applicant/'>返回核验流程 Back to the verification</a></p>"
            ),
        )
    # Outside the portal too, the page is the applicant's: what they authorized and how to
    # take it back, never the lender's reference for them or an identifier they did not see.
    provider = {"wechat": "微信 WeChat"}.get(linked.provider, linked.provider)
    rows = [
        ("服务 Provider", provider),
        ("账户 Account", linked.account),
        ("授权范围 Authorized scope", linked.scope),
        ("同意编号 Consent reference", linked.consent_id),
    ]
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows)
    return page(
        "授权成功 / Authorization recorded",
        (
            "<p id='result'>账户已授权，已证明账户由您本人控制。"
            "<br>Control of the account is proven.</p>"
            f"<dl>{items}</dl>"
            "<p>您可以随时撤回此项同意，撤回后令牌即被删除。"
            "<br>You can withdraw this consent at any time; the tokens are then deleted.</p>"
        ),
    )


def error_page(failure: OAuthFailure) -> str:
    return page(
        "授权未完成 / Authorization not completed",
        (
            f"<p class='error' id='error'>{html.escape(failure.rule)}</p>"
            f"<p>Error code: <code id='code'>{html.escape(failure.code)}</code></p>"
        ),
    )


def new_browser_id() -> str:
    return secrets.token_urlsafe(32)
