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
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit chain, masked).")],
    as_json: JsonOpt = False,
) -> None:
    """Propose erasing a subject (crypto-shredding, or restriction under a legal hold): a
    second person with the erase permission confirms it (`idv subject confirm-erasure`)."""
    with runtime() as rt:
        p = rt.services.subjects.propose_erasure(applicant_ref, reason=reason, actor=actor())
    if as_json:
        emit(p.model_dump(mode="json"))
    else:
        console.print(
            f"{applicant_ref}: erasure proposed ({p.proposal_id}); it waits for a second "
            f"person: idv subject confirm-erasure {p.proposal_id}"
        )


@subject_app.command("erasures")
def subject_erasures(
    all_: Annotated[bool, typer.Option("--all", help="Confirmed and withdrawn ones too.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Erasure proposals waiting for a second person (oldest first)."""
    with runtime() as rt:
        found = rt.services.subjects.erasure_proposals(actor=actor(), pending=not all_)
    if as_json:
        emit([p.model_dump(mode="json") for p in found])
        return
    for p in found:
        console.print(
            f"{p.proposal_id}  {p.applicant_ref}  {p.status}  proposed by {p.proposed_by}"
            f" {p.proposed_at.isoformat(timespec='minutes')}: {p.reason}"
        )
    if not found:
        console.print("no erasure proposal waits")


@subject_app.command("confirm-erasure")
def subject_confirm_erasure(proposal_id: str, as_json: JsonOpt = False) -> None:
    """Confirm another person's erasure proposal: the subject is erased, or restricted when
    a legal hold applies (and the erasure request it answers is answered)."""
    with runtime() as rt:
        done = rt.services.subjects.confirm_erasure(proposal_id, actor=actor())
    if as_json:
        emit(done.model_dump())
    else:
        console.print(f"{done.applicant_ref}: {done.result}")


@subject_app.command("withdraw-erasure")
def subject_withdraw_erasure(proposal_id: str, as_json: JsonOpt = False) -> None:
    """Take back one's own erasure proposal."""
    with runtime() as rt:
        p = rt.services.subjects.withdraw_erasure(proposal_id, actor=actor())
    if as_json:
        emit(p.model_dump(mode="json"))
    else:
        console.print(f"{p.applicant_ref}: erasure proposal {p.proposal_id} withdrawn")


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
