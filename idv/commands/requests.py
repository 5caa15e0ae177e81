"""`idv requests`: data-subject requests on the command line (until the workbench's queue
shows them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from idv.shell import JsonOpt, actor, requests_app, runtime
from idv.terminal import console, emit, fail

if TYPE_CHECKING:
    from services.requests import SubjectRequestAnswer


def _row(r: SubjectRequestAnswer) -> list[str]:
    state: str = r.status
    if r.overdue:
        state = "OVERDUE"
    elif r.in_time is False:
        state = "answered late"
    return [
        r.request_id,
        r.applicant_ref,
        r.kind,
        r.target or "",
        state,
        r.deadline[:10],
        r.assignee or "",
        r.outcome or "",
    ]


def _table(rows: list[SubjectRequestAnswer], title: str) -> None:
    table = Table(title=title)
    table.add_column("request", no_wrap=True, min_width=36)
    for col in ("applicant", "kind", "target", "state", "deadline", "assignee", "outcome"):
        table.add_column(col)
    for r in rows:
        table.add_row(*_row(r))
    console.print(table)


@requests_app.command("open")
def requests_open(
    applicant_ref: str,
    kind: Annotated[str, typer.Option(help="access, correction, erasure, restriction or dispute")],
    target: Annotated[
        str | None,
        typer.Option(help="correction: name, id_number or phone; dispute: decision or court_list"),
    ] = None,
    channel: Annotated[str, typer.Option(help="How the request came: app, web, branch...")] = "cli",
    assignee: Annotated[
        str | None,
        typer.Option(help="Who answers it (a person with the subject_requests permission)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a request with its deadline (policies/requests.yaml)."""
    from services.requests import OpenRequest

    with runtime() as rt:
        r = rt.services.requests.open(
            OpenRequest(
                applicant_ref=applicant_ref,
                kind=kind,
                target=target,
                channel=channel,
                assignee=assignee,
            ),
            actor=actor(),
        )
    if as_json:
        emit(r.model_dump())
    else:
        console.print(f"request {r.request_id} ({r.kind}) due {r.deadline}")


@requests_app.command("list")
def requests_list(
    status: Annotated[str | None, typer.Option(help="open or answered")] = None,
    overdue: Annotated[
        bool, typer.Option("--overdue", help="Only open requests past their deadline.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Requests by deadline; open ones past it are flagged OVERDUE (exit 1 if any)."""
    with runtime() as rt:
        listed = rt.services.requests.list(actor=actor(), status=status, overdue=overdue)
    if as_json:
        emit(listed.model_dump())
    else:
        _table(listed.requests, f"Subject requests ({listed.total}, {listed.overdue} overdue)")
    if listed.overdue:
        raise typer.Exit(1)


@requests_app.command("show")
def requests_show(request_id: str, as_json: JsonOpt = False) -> None:
    """One request: its kind, deadline, state and answer."""
    with runtime() as rt:
        r = rt.services.requests.show(request_id, actor=actor())
    if as_json:
        emit(r.model_dump())
    else:
        _table([r], f"Request {request_id}")
        if r.result:
            console.print_json(json.dumps(r.result, ensure_ascii=False))


@requests_app.command("answer")
def requests_answer(
    request_id: str,
    outcome: Annotated[
        str | None,
        typer.Option(
            help="A dispute's answer: upheld or amended "
            "(a court-list dispute derives it from the "
            "re-query when not given)."
        ),
    ] = None,
    note: Annotated[str | None, typer.Option(help="The answer's text to the person.")] = None,
    value_stdin: Annotated[
        bool,
        typer.Option(
            "--value-stdin",
            help="A correction: read the "
            "corrected value from stdin (never an "
            "argument, which others can see).",
        ),
    ] = False,
    output: Annotated[
        Path | None, typer.Option(help="An access request: write the file for the person here.")
    ] = None,
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="Re-check against the sandbox on loopback.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Carry a request out and record the answer: access writes the person's file,
    correction re-verifies the corrected value, erasure proposes the erasure (a second person
    confirms it: idv subject confirm-erasure), restriction restricts, a court-list dispute
    re-queries the hit."""
    from pydantic import SecretStr

    from flows.subject_requests import recheck
    from idv.shell import sandbox_wired
    from services.requests import AnswerRequest

    if output is not None and output.is_dir():
        fail("--output", "is a directory", as_json=as_json)
    value = None
    if value_stdin:
        text = sys.stdin.readline().strip()
        if not text:
            fail("--value-stdin", "no value was given on stdin", as_json=as_json)
        value = SecretStr(text)
    with sandbox_wired(sandbox), runtime() as rt:
        r = rt.services.requests.answer(
            request_id,
            AnswerRequest(outcome=outcome, note=note, value=value),
            actor=actor(),
            recheck=recheck(rt),
        )
    if r.file is not None:
        text = json.dumps(r.file, ensure_ascii=False, indent=2) + "\n"
        if output is None:
            sys.stdout.write(text)
            return
        try:
            output.write_text(text, encoding="utf-8")
            output.chmod(0o600)
        except OSError:
            fail("--output", "cannot be written", as_json=as_json)
    if as_json:
        emit(r.model_dump(exclude={"file"}))
    elif r.erasure_proposal is not None:
        console.print(
            f"request {request_id}: erasure proposed ({r.erasure_proposal}); it waits for a "
            f"second person: idv subject confirm-erasure {r.erasure_proposal}"
        )
    else:
        where = f", file written to {output}" if output is not None else ""
        console.print(
            f"request {request_id} answered: {r.outcome} "
            f"({'in time' if r.in_time else 'late'}){where}"
        )
