"""`idv oauth`."""

from __future__ import annotations

from rich.table import Table

from idv.shell import (
    MOVED,
    JsonOpt,
    actor,
    moved,
    oauth_app,
    runtime,
)
from idv.terminal import (
    console,
    emit,
)


@oauth_app.command("refresh")
def oauth_refresh(as_json: JsonOpt = False) -> None:
    """Refresh access tokens that expire soon; purge those whose refresh token died. Needs
    `run` (the scheduled `oauth-refresh` deployment does the same)."""
    with runtime() as rt:
        rt.services.runs.authorize(actor(), operation="oauth.refresh")
        counts = rt.services.oauth.refresh_due()
    if as_json:
        emit(counts.model_dump(mode="json"))
    else:
        console.print(
            f"{counts.refreshed} refreshed, {counts.reauth_required} need "
            f"re-authorization, {counts.failed} failed"
        )


@oauth_app.command("show")
def oauth_show(applicant_ref: str, as_json: JsonOpt = False) -> None:
    """An applicant's authorized accounts: status, dates, whether tokens are held (signed
    in, as `GET /subjects/{ref}/accounts`)."""
    with runtime() as rt:
        actor()
        accounts = rt.services.accounts.view(applicant_ref).accounts
    if as_json:
        emit(
            {
                "applicant_ref": applicant_ref,
                "total": len(accounts),
                "accounts": [a.model_dump() for a in accounts],
            }
        )
        return
    table = Table(
        "provider",
        "status",
        "scope",
        "tokens held",
        "access expires",
        "linked",
        title=f"Authorized accounts of {applicant_ref} ({len(accounts)})",
    )
    for a in accounts:
        table.add_row(
            a.provider,
            a.status,
            a.scope,
            "yes" if a.tokens_held else "no",
            a.access_expires_at or "-",
            a.linked_at or "-",
        )
    console.print(table)


@oauth_app.command("schedule", hidden=True, context_settings=MOVED)
def oauth_schedule() -> None:
    """Moved: the token-refresh schedule is data now (see `idv schedule`)."""
    moved("oauth-refresh")
