"""`idv review next / show / claim / release / note / reveal / decide / confirm / snooze /
escalate / assign / tag / bulk-assign / bulk-close / whitelist / unwhitelist / wake /
answered / dossier / labels`: the workbench on the command line, over `services.cases`.
Every command takes `--json`."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from idv.shell import JsonOpt, actor, review_app, runtime, sandbox_wired
from idv.terminal import console, emit, fail

CaseArg = Annotated[
    str,
    typer.Argument(help="The case id, or its first characters as `idv review list` shows them."),
]


def full_case_id(rt: Any, given: str) -> str:
    """The whole id of the case `given` names: a whole id, or a prefix of one case's id
    (at least 4 characters, as `idv review list` shows them); refused, naming `case`, when
    no case or more than one has it."""
    return str(rt.services.cases.case_id_of(given, actor=actor()))


def _show_outcome(out: Any, as_json: bool, verb: str) -> None:
    if as_json:
        emit(out.model_dump() if out is not None else None)
    elif out is None:
        console.print("no case is waiting for you")
    else:
        extra = f", claimed by {out.claimed_by} until {out.lease_until}" if out.claimed_by else ""
        console.print(
            f"case {out.case_id} {verb}: {out.status} in the {out.queue} queue{extra}"
            + (f" ({out.note})" if out.note else "")
        )


@review_app.command("next")
def review_next(as_json: JsonOpt = False) -> None:
    """Claim the oldest due unassigned case you may work."""
    with runtime() as rt:
        out = rt.services.cases.next_case(actor=actor())
    _show_outcome(out, as_json, "claimed")


@review_app.command("claim")
def review_claim(case_id: CaseArg, as_json: JsonOpt = False) -> None:
    """Claim a case (or renew your claim) for the lease in policies/cases.yaml."""
    with runtime() as rt:
        case_id = full_case_id(rt, case_id)
        out = rt.services.cases.claim(case_id, actor=actor())
    _show_outcome(out, as_json, "claimed")


@review_app.command("release")
def review_release(case_id: CaseArg, as_json: JsonOpt = False) -> None:
    """Give a claimed case back to the queue."""
    with runtime() as rt:
        case_id = full_case_id(rt, case_id)
        out = rt.services.cases.release(case_id, actor=actor())
    _show_outcome(out, as_json, "released")


@review_app.command("show")
def review_show(case_id: CaseArg, as_json: JsonOpt = False) -> None:
    """The case: why it was flagged, each step's evidence and consent, court entries,
    alerts, decisions, notes, outreach and the timeline; masked."""
    with runtime() as rt:
        case_id = full_case_id(rt, case_id)
        view = rt.services.cases.view(case_id, actor=actor())
    if as_json:
        emit(view.model_dump())
        return
    c = view.case
    console.print(
        f"case {c.case_id}: {c.applicant_ref} {c.status} ({c.queue} queue), "
        f"priority {c.priority}, due {c.due_at} [{c.sla}]"
    )
    console.print(
        f"  {c.name} / {c.id_number} / {c.phone or '-'}; score {view.score}, "
        f"policy {view.policy_version}, evidence version {c.evidence_version}"
    )
    for r in view.reasons:
        console.print(f"  reason {r.code}: {r.en} / {r.zh}")
    for p in view.points:
        console.print(f"  feature {p.feature} = {p.band}: {p.points} points")
    for a in view.alerts:
        console.print(f"  alert {a.rule} at {a.created_at}: {a.evidence}")
    for st in view.steps:
        consent = ", ".join(f"{x.notice_version} granted {x.granted_at}" for x in st.consents)
        console.print(
            f"  step {st.step}: {st.status} ({st.reason}) as of {st.as_of or '-'}, "
            f"request {st.vendor_request_id or '-'}, fee {st.fee_cents} cents, "
            f"consent {consent or '-'}"
        )
    for e in view.court_entries:
        console.print(
            f"  court entry {e.case_number}: {e.level}, {e.status}"
            + (" (whitelisted)" if e.whitelisted else "")
        )
    for d in view.decisions:
        console.print(
            f"  decision {d.action} by {d.actor} ({d.status}) at {d.decided_at}: {d.reason}"
        )
    for n in view.notes:
        console.print(f"  note by {n.author} at {n.created_at}: {n.text}")
    for o in view.outreach:
        console.print(
            f"  outreach {o.outreach_id} {o.template} by {o.channel}: {o.status} "
            f"until {o.expires_at}"
        )
    for t in view.timeline:
        console.print(f"  {t.at} {t.kind} {t.actor or ''}")


@review_app.command("note")
def review_note(
    case_id: CaseArg,
    text: Annotated[str, typer.Argument(help="The note.")],
    as_json: JsonOpt = False,
) -> None:
    """Add a note to a case (sealed at rest)."""
    with runtime() as rt:
        case_id = full_case_id(rt, case_id)
        out = rt.services.cases.note(case_id, text, actor=actor())
    _show_outcome(out, as_json, "noted")


@review_app.command("reveal")
def review_reveal(
    case_id: CaseArg,
    field: Annotated[str, typer.Option(help="name, id_number or phone")],
    reason_code: Annotated[
        str,
        typer.Option("--reason-code", help="A reason in policies/access.yaml (reveal.reasons)."),
    ],
    reason: Annotated[str, typer.Option(help="Why, in words (audited).")],
    as_json: JsonOpt = False,
) -> None:
    """Show one unmasked field of the case's applicant (needs `reveal`; audited; limited
    per user per day)."""
    with runtime() as rt:
        case_id = full_case_id(rt, case_id)
        out = rt.services.cases.reveal(
            case_id, {"field": field, "reason_code": reason_code, "reason": reason}, actor=actor()
        )
    if as_json:
        emit(out.model_dump())
    else:
        sys.stdout.write((out.value or "") + "\n")


@review_app.command("decide")
def review_decide(
    case_id: CaseArg,
    action: Annotated[
        str, typer.Argument(help="approve, reject, request_info, escalate, refer or close")
    ],
    reason: Annotated[str, typer.Option(help="Why (stored with the decision).")],
    disposition: Annotated[
        str | None,
        typer.Option(help="false_positive, valuable_alert or confirmed_risk (close needs one)."),
    ] = None,
    template: Annotated[str | None, typer.Option(help="request_info: the template.")] = None,
    channel: Annotated[
        str | None, typer.Option(help="request_info: sms, in_app or wechat_template.")
    ] = None,
    evidence_version: Annotated[
        int | None, typer.Option("--evidence-version", min=1, help="The evidence version you read.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Decide a case you have claimed. Reject and refer wait for a supervisor's confirm."""
    req = {
        "action": action,
        "reason": reason,
        "disposition": disposition,
        "template": template,
        "channel": channel,
        "evidence_version": evidence_version,
    }
    with runtime() as rt:
        case_id = full_case_id(rt, case_id)
        out = rt.services.cases.decide(
            case_id, {k: v for k, v in req.items() if v is not None}, actor=actor()
        )
    _show_outcome(out, as_json, "decided")


@review_app.command("confirm")
def review_confirm(
    case_id: CaseArg,
    reason: Annotated[str | None, typer.Option(help="Why, in words (sealed).")] = None,
    sandbox: Annotated[
        bool,
        typer.Option(
            "--sandbox", help="Re-query the court list (for a reject on a hit) on the sandbox."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Confirm another person's pending reject or referral (four eyes). A reject that rests
    on a court-list hit asks the list again first."""
    with sandbox_wired(sandbox), runtime() as rt:
        case_id = full_case_id(rt, case_id)
        out = rt.services.cases.confirm(case_id, actor=actor(), reason=reason)
    _show_outcome(out, as_json, "confirmed")


@review_app.command("send-back")
def review_send_back(
    case_id: CaseArg,
    reason: Annotated[str, typer.Option(help="Why the proposal does not stand (sealed).")],
    as_json: JsonOpt = False,
) -> None:
    """Refuse another person's pending reject or referral: the case returns to them."""
    with runtime() as rt:
        case_id = full_case_id(rt, case_id)
        out = rt.services.cases.send_back(case_id, reason, actor=actor())
    _show_outcome(out, as_json, "sent back")


@review_app.command("snooze")
def review_snooze(
    case_id: CaseArg,
    until: Annotated[str, typer.Option(help="ISO date or time (UTC when no zone is given).")],
    as_json: JsonOpt = False,
) -> None:
    """Put a claimed case aside until a date (waiting for the applicant)."""
    try:
        when = datetime.fromisoformat(until)
    except ValueError:
        fail("--until", "must be an ISO date or date and time", as_json=as_json)
    with runtime() as rt:
        case_id = full_case_id(rt, case_id)
        out = rt.services.cases.snooze(case_id, when, actor=actor())
    _show_outcome(out, as_json, "snoozed")


@review_app.command("escalate")
def review_escalate(
    case_id: CaseArg, reason: Annotated[str, typer.Option(help="Why.")], as_json: JsonOpt = False
) -> None:
    """Move a claimed case to the supervisor queue."""
    with runtime() as rt:
        case_id = full_case_id(rt, case_id)
        out = rt.services.cases.escalate(case_id, reason, actor=actor())
    _show_outcome(out, as_json, "escalated")


@review_app.command("assign")
def review_assign(
    case_id: CaseArg,
    to: Annotated[str | None, typer.Option("--to", help="The user; omit to unassign.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Assign a case to a person (needs `reassign`)."""
    with runtime() as rt:
        case_id = full_case_id(rt, case_id)
        out = rt.services.cases.assign(case_id, to, actor=actor())
    _show_outcome(out, as_json, "assigned")


@review_app.command("tag")
def review_tag(
    case_id: CaseArg,
    add: Annotated[list[str] | None, typer.Option("--add", help="A tag to add.")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="A tag to drop.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add or remove tags on a case."""
    with runtime() as rt:
        case_id = full_case_id(rt, case_id)
        out = rt.services.cases.tag(case_id, add or [], remove or [], actor=actor())
        tags = rt.services.cases.view(out.case_id, actor=actor()).case.tags
    if as_json:
        emit({**out.model_dump(), "tags": tags})
    else:
        console.print(f"case {out.case_id}: tags {', '.join(tags) or '-'}")


@review_app.command("bulk-assign")
def review_bulk_assign(
    case_ids: Annotated[list[str], typer.Argument(help="Case ids.")],
    to: Annotated[str, typer.Option("--to", help="The user.")],
    as_json: JsonOpt = False,
) -> None:
    """Assign many cases at once (needs `bulk`)."""
    with runtime() as rt:
        out = rt.services.cases.bulk_assign(case_ids, to, actor=actor())
    if as_json:
        emit(out.model_dump())
    else:
        console.print(f"assigned {len(out.changed)}, skipped {len(out.skipped)}")
        for case_id, why in out.why.items():
            console.print(f"  skipped {case_id}: {why}")


@review_app.command("bulk-close")
def review_bulk_close(
    case_ids: Annotated[list[str], typer.Argument(help="Case ids.")],
    disposition: Annotated[
        str, typer.Option(help="false_positive, valuable_alert or confirmed_risk")
    ],
    reason: Annotated[str, typer.Option(help="Why.")],
    as_json: JsonOpt = False,
) -> None:
    """Close many cases with one disposition (needs `bulk`)."""
    with runtime() as rt:
        out = rt.services.cases.bulk_close(case_ids, disposition, reason, actor=actor())
    if as_json:
        emit(out.model_dump())
    else:
        console.print(f"closed {len(out.changed)}, skipped {len(out.skipped)}")
        for case_id, why in out.why.items():
            console.print(f"  skipped {case_id}: {why}")


@review_app.command("whitelist")
def review_whitelist(
    applicant_ref: str,
    case_number: Annotated[
        str, typer.Option("--case-number", help="The court-list entry's case number.")
    ],
    reason: Annotated[str, typer.Option(help="Why the entry is not this applicant.")],
    as_json: JsonOpt = False,
) -> None:
    """Mark an (applicant, court-list entry) pair as not a match (needs `whitelist`)."""
    with runtime() as rt:
        out = rt.services.cases.whitelist(applicant_ref, case_number, reason, actor=actor())
    if as_json:
        emit(out.model_dump())
    else:
        console.print(f"whitelisted: entry {out.entry_id}")


@review_app.command("unwhitelist")
def review_unwhitelist(entry_id: str, as_json: JsonOpt = False) -> None:
    """Revoke a whitelist entry: later screenings of the pair flag again."""
    with runtime() as rt:
        out = rt.services.cases.unwhitelist(entry_id, actor=actor())
    if as_json:
        emit(out.model_dump())
    else:
        console.print(f"revoked: entry {out.entry_id}")


@review_app.command("wake")
def review_wake(as_json: JsonOpt = False) -> None:
    """Expire unanswered outreach and end snoozes: their cases return to the queue. Needs
    `case_work` (the scheduled runs do the same)."""
    with runtime() as rt:
        rt.services.access.require(actor(), "case_work", operation="cases.wake")
        out = rt.services.cases.wake()
    if as_json:
        emit(out.model_dump(mode="json"))
    else:
        console.print(
            f"outreach expired: {out.outreach_expired}, snoozes ended: {out.snoozes_ended}"
        )


@review_app.command("answered")
def review_answered(
    outreach_id: Annotated[str, typer.Argument(help="The outreach id (`idv review show`).")],
    as_json: JsonOpt = False,
) -> None:
    """Record that the applicant answered a request for information: the case wakes, back
    in the queue (needs `answer_outreach`)."""
    with runtime() as rt:
        out = rt.services.cases.answer_outreach(outreach_id, actor=actor())
    _show_outcome(out, as_json, "woken")


@review_app.command("dossier")
def review_dossier(
    case_id: CaseArg,
    out: Annotated[Path, typer.Option(help="Folder to write dossier.json and its .sig into.")],
    declare: Annotated[
        list[str] | None,
        typer.Option(help="A field to hand over unmasked (name, id_number, phone; needs reveal)."),
    ] = None,
    reason: Annotated[str, typer.Option(help="The legal ground for declared fields.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Export a confirmed referral's dossier: JSON plus a detached Ed25519 signature."""
    with runtime() as rt:
        case_id = full_case_id(rt, case_id)
        d = rt.services.cases.dossier(case_id, actor=actor(), declare=declare or (), reason=reason)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dossier.json").write_text(d.document, encoding="utf-8")
    (out / "dossier.json.sig").write_text(d.signature + "\n", encoding="ascii")
    (out / "dossier.pub").write_text(d.public_key + "\n", encoding="ascii")
    if as_json:
        emit({"sha256": d.sha256, "public_key": d.public_key, "folder": str(out)})
    else:
        console.print(f"dossier {d.sha256} written to {out} (signature dossier.json.sig)")


@review_app.command("labels")
def review_labels(
    out: Annotated[Path, typer.Option(help="The CSV to write (`idv policy backtest --outcomes`).")],
    as_json: JsonOpt = False,
) -> None:
    """Closed cases' dispositions as backtest labels: false_positive is good, valuable_alert
    and confirmed_risk bad (policies/cases.yaml)."""
    with runtime() as rt:
        labels = rt.services.cases.labels(actor=actor())
    out.write_text(
        "applicant_ref,outcome\n"
        + "".join(f"{ref},{label}\n" for ref, label in sorted(labels.items())),
        encoding="utf-8",
    )
    if as_json:
        emit({"labels": len(labels), "file": str(out)})
    else:
        console.print(f"{len(labels)} labels written to {out}")
