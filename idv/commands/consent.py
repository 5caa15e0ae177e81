"""`idv consent`."""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from idv.shell import (
    JsonOpt,
    actor,
    consent_app,
    runtime,
)
from idv.terminal import (
    console,
    emit,
    fail,
    refuse,
)
from services.errors import ServiceError


@consent_app.command("grant")
def consent_grant(
    applicant_ref: Annotated[str, typer.Argument(help="The subject's applicant_ref.")],
    purpose: Annotated[str, typer.Option(help="e.g. onboarding_verification")],
    scope: Annotated[
        list[str], typer.Option(help="A scope; repeat for several (one sensitive scope per grant).")
    ],
    notice: Annotated[str, typer.Option(help="The notice version shown.")],
    channel: Annotated[str, typer.Option(help="app, web, branch, call_center...")],
    evidence: Annotated[str, typer.Option(help="Reference to the proof, e.g. sha256:<hex>.")],
    granted_at: Annotated[str | None, typer.Option(help="ISO time with zone; default now.")] = None,
    expires_at: Annotated[
        str | None, typer.Option(help="ISO time with zone; default the purpose's longest validity.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Record one affirmative act of consent."""
    from pydantic import ValidationError

    from services.consent import GrantRequest
    from services.errors import from_validation

    try:
        req = GrantRequest(
            subject_ref=applicant_ref,
            purpose=purpose,
            scopes=frozenset(scope),
            notice_version=notice,
            channel=channel,
            evidence=evidence,
            granted_at=granted_at,
            expires_at=expires_at,
        )
    except ValidationError as exc:
        refuse(_cli_field(from_validation(exc)), as_json=as_json)
    with runtime() as rt:
        # Nobody signed in: refused (exit 2); a role without consent_write: refused, audited.
        result = rt.services.consent.grant(req, actor=actor(), via="cli")
    if as_json:
        emit(result.model_dump(mode="json"))
    else:
        state = "recorded" if result.created else "already recorded"
        console.print(f"consent {result.consent_id} {state} under {result.notice_version}")


def _cli_field(exc: ServiceError) -> ServiceError:
    """A request model's field under the name the command line gives it."""
    names = {
        "subject_ref": "APPLICANT_REF",
        "scopes": "--scope",
        "notice_version": "--notice",
        "granted_at": "--granted-at",
        "expires_at": "--expires-at",
    }
    head, _, rest = exc.field.partition(".")
    field = names.get(head, f"--{head.replace('_', '-')}")
    return type(exc)(field + (f".{rest}" if rest else ""), exc.rule)


@consent_app.command("withdraw")
def consent_withdraw(
    consent_id: Annotated[str, typer.Argument(help="The grant to withdraw (its whole id).")],
    applicant_ref: Annotated[
        str, typer.Option(help="The subject whose grant it is; another's is no such grant.")
    ],
    channel: Annotated[str, typer.Option(help="Where the withdrawal came from.")] = "cli",
    evidence: Annotated[str | None, typer.Option(help="Reference to the proof.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Withdraw a grant of the subject named by --applicant-ref. Every later step for that
    person is refused by the gate."""
    from pydantic import ValidationError

    from services.consent import WithdrawRequest
    from services.errors import from_validation

    try:
        req = WithdrawRequest(applicant_ref=applicant_ref, channel=channel, evidence=evidence)
    except ValidationError as exc:
        refuse(_cli_field(from_validation(exc)), as_json=as_json)
    with runtime() as rt:
        result = rt.services.consent.withdraw(consent_id, req, actor=actor(), via="cli")
    if as_json:
        emit(result.model_dump(mode="json"))
    elif result.already_withdrawn:
        console.print(
            f"consent {consent_id} was already withdrawn at {result.withdrawn_at.isoformat()}"
        )
    else:
        console.print(f"consent {consent_id} withdrawn at {result.withdrawn_at.isoformat()}")


@consent_app.command("show")
def consent_show(applicant_ref: str, as_json: JsonOpt = False) -> None:
    """A subject's grants and their state now (whole consent ids, for `consent withdraw`)."""
    with runtime() as rt:
        actor()  # nobody signed in: refused (exit 2), nothing shown
        grants = rt.services.consent.status(applicant_ref).grants
    if as_json:
        emit(
            {
                "applicant_ref": applicant_ref,
                "total": len(grants),
                "grants": [g.model_dump() for g in grants],
            }
        )
        return
    table = Table(title=f"Consents of {applicant_ref} ({len(grants)})")
    table.add_column("consent", no_wrap=True, min_width=36)  # whole, for `consent withdraw`
    for col in ("state", "purpose", "scopes", "notice", "channel", "granted", "expires"):
        table.add_column(col)
    for g in grants:
        table.add_row(
            g.consent_id,
            g.state,
            g.purpose,
            ", ".join(g.scopes),
            g.notice_version,
            g.channel,
            g.granted_at[:19],
            g.expires_at[:19],
        )
    console.print(table)


@consent_app.command("export")
def consent_export(
    applicant_ref: str,
    output: Annotated[Path | None, typer.Option(help="Write the receipt here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The subject's consent receipt (JSON, identifiers masked), on stdout or to a file."""
    if output is not None and output.is_dir():
        fail("--output", "is a directory", as_json=as_json)
    with runtime() as rt:
        receipt = rt.services.consent.receipt(applicant_ref, actor=actor())
    text = json.dumps(receipt.model_dump(), ensure_ascii=False, indent=2)
    if output is None:
        sys.stdout.write(text + "\n")
        return
    try:
        _write_new(output, text + "\n")
    except OSError:
        fail("--output", "cannot be written", as_json=as_json)
    if as_json:
        emit({"applicant_ref": applicant_ref, "output": str(output), "events": len(receipt.events)})
    else:
        console.print(f"receipt written to {output}")


def _write_new(path: Path, text: str) -> None:
    """Whole or not at all: written beside, then renamed over."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


@consent_app.command("stats")
def consent_stats(as_json: JsonOpt = False) -> None:
    """Per notice version and channel: people asked, granting each scope, refusing,
    abandoning the ask, withdrawing."""
    with runtime() as rt:
        actor()  # nobody signed in: refused (exit 2)
        stats = rt.services.consent.stats()
    if as_json:
        emit(stats.model_dump())
        return
    scopes = sorted({k for row in stats.stats for k in row.granted})
    table = Table(title="Consent by notice version and channel")
    for col in ("notice", "channel", "asked", *scopes, "refused", "abandoned", "withdrew"):
        table.add_column(col, justify="right" if col not in ("notice", "channel") else "left")
    for row in stats.stats:
        asked = row.asked or 1
        table.add_row(
            row.notice_version,
            row.channel,
            str(row.asked),
            *[f"{row.granted.get(s, 0)} ({100 * row.granted.get(s, 0) // asked}%)" for s in scopes],
            str(row.refused),
            str(row.abandoned),
            str(row.withdrew),
        )
    console.print(table)


@consent_app.command("ask")
def consent_ask(
    applicant_ref: Annotated[str, typer.Argument(help="The subject's applicant_ref.")],
    purpose: Annotated[str, typer.Option(help="e.g. onboarding_verification")],
    scope: Annotated[list[str], typer.Option(help="A scope asked for; repeat for several.")],
    notice: Annotated[str, typer.Option(help="The notice version shown.")],
    channel: Annotated[str, typer.Option(help="app, web, branch, call_center...")],
    outcome: Annotated[
        str, typer.Option(help="refused, abandoned, or granted (with --consent-id)")
    ],
    consent_id: Annotated[str | None, typer.Option(help="The grant a granted ask made.")] = None,
    asked_at: Annotated[str | None, typer.Option(help="ISO time with zone; default now.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Record an ask for consent that was refused or abandoned (or link a grant to its ask),
    so authorization rates per notice version count everyone asked."""
    from pydantic import ValidationError

    from services.consent import AskRequest
    from services.errors import from_validation

    try:
        req = AskRequest(
            subject_ref=applicant_ref,
            purpose=purpose,
            scopes=frozenset(scope),
            notice_version=notice,
            channel=channel,
            outcome=outcome,
            consent_id=consent_id,
            asked_at=asked_at,
        )
    except ValidationError as exc:
        refuse(_cli_field(from_validation(exc)), as_json=as_json)
    with runtime() as rt:
        # Nobody signed in: refused (exit 2); a role without consent_write: refused, audited.
        result = rt.services.consent.ask(req, actor=actor())
    if as_json:
        emit(result.model_dump(mode="json"))
    else:
        console.print(
            f"ask {result.ask_id} recorded: {result.outcome} under {result.notice_version}"
        )


@consent_app.command("receipt")
def consent_receipt(
    consent_id: Annotated[str, typer.Argument(help="The grant (its whole id).")],
    output: Annotated[
        Path | None,
        typer.Option(
            help="Write the signed receipt (JWS) here; the public key beside it (.jwk.json)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The consent receipt of one grant as a signed JWS (Ed25519; ISO/IEC TS 27560 and
    Kantara fields): on stdout, or to a file with its public key beside it."""
    if output is not None and output.is_dir():
        fail("--output", "is a directory", as_json=as_json)
    with runtime() as rt:
        signed = rt.services.consent.signed_receipt(consent_id, actor=actor())
    if output is None:
        if as_json:
            emit(signed.model_dump())
        else:
            sys.stdout.write(signed.jws + "\n")
        return
    key_file = output.with_name(output.name + ".jwk.json")
    try:
        _write_new(output, signed.jws + "\n")
        _write_new(key_file, json.dumps(signed.public_key, indent=2) + "\n")
    except OSError:
        fail("--output", "cannot be written", as_json=as_json)
    if as_json:
        emit(
            {
                "consent_id": consent_id,
                "output": str(output),
                "public_key": str(key_file),
                "kid": signed.public_key["kid"],
            }
        )
    else:
        console.print(f"signed receipt written to {output} (public key {key_file})")
