"""`idv subject`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from idv.shell import (
    JsonOpt,
    actor,
    runtime,
    subject_app,
)
from idv.terminal import (
    console,
    emit,
)


@subject_app.command("erase")
def subject_erase(
    applicant_ref: str,
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit chain).")],
    as_json: JsonOpt = False,
) -> None:
    """Erase a subject (crypto-shredding), or restrict them if a legal hold applies."""
    with runtime() as rt:
        done = rt.services.subjects.erase(applicant_ref, reason=reason, actor=actor())
    if as_json:
        emit(done.model_dump())
    else:
        console.print(f"{applicant_ref}: {done.result}")


@subject_app.command("hold")
def subject_hold(
    applicant_ref: str,
    basis: Annotated[
        str, typer.Option(help="A hold in policies/retention.yaml.")
    ] = "aml_customer_identification",
    as_json: JsonOpt = False,
) -> None:
    """Place a legal hold: an erasure request then restricts instead of erasing."""
    with runtime() as rt:
        hold = rt.services.subjects.hold(applicant_ref, basis=basis, actor=actor())
    if as_json:
        emit({"hold_id": hold.hold_id, "until": hold.until.isoformat()})
    else:
        console.print(f"hold {hold.hold_id} on {applicant_ref} until {hold.until.date()}")


@subject_app.command("reveal")
def subject_reveal(
    applicant_ref: str,
    field: Annotated[str, typer.Option(help="name, id_number or phone")],
    reason_code: Annotated[
        str,
        typer.Option(
            "--reason-code", help="Why, from the list in policies/access.yaml (reveal.reasons)."
        ),
    ],
    reason: Annotated[str, typer.Option(help="Why, in words (audited).")],
    purpose: Annotated[str, typer.Option(help="The purpose the read serves.")] = "review",
    as_json: JsonOpt = False,
) -> None:
    """Show one unmasked value: needs a signed-in user whose role holds `reveal`, a reason
    code and a reason in words."""
    with runtime() as rt:
        shown = rt.services.subjects.reveal(
            applicant_ref,
            field,
            reason_code=reason_code,
            reason=reason,
            purpose=purpose,
            actor=actor(),
        )
    if as_json:
        emit(shown.model_dump())
    else:
        sys.stdout.write((shown.value or "") + "\n")
