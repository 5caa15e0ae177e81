"""`idv events ingest` and `idv policy backtest`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from idv.shell import (
    JsonOpt,
    actor,
    events_app,
    given_path,
    policy_app,
    runtime,
)
from idv.terminal import (
    EXIT_USAGE,
    console,
    emit,
    fail,
)


@events_app.command("ingest")
def events_ingest(
    file: Annotated[Path, typer.Argument(help="A JSONL file of events.")],
    as_json: JsonOpt = False,
) -> None:
    """Ingest login and profile-change events (consent scope behavior_signals); refused
    lines are listed with field and rule, alerts open review cases. Exit 2 if every line
    was refused."""
    if file.is_dir():
        fail("FILE", "is a directory, not an events file", as_json=as_json)
    if not file.is_file():
        fail("FILE", "no such events file", as_json=as_json)
    from services.events import read_jsonl

    with runtime() as rt:
        report = rt.services.events.ingest(read_jsonl(file), actor=actor()).as_dict()
    all_refused = bool(report["refused"]) and not report["accepted"] and not report["duplicates"]
    if as_json:
        emit(report)
        raise typer.Exit(EXIT_USAGE if all_refused else 0)
    console.print(
        f"accepted {report['accepted']}, duplicates {report['duplicates']}, "
        f"refused {len(report['refused'])}, alerts {len(report['alerts'])}"
    )
    for r in report["refused"][:20]:
        console.print(f"refused line {r['line']}: {r['field']} {r['reason']}")
    for a in report["alerts"]:
        console.print(f"alert {a['rule']} for {a['applicant_ref']}: {a['evidence']}")
    if all_refused:
        fail("FILE", "every line was refused", as_json=False)


@policy_app.command("backtest")
def policy_backtest(
    outcomes: Annotated[
        Path,
        typer.Option("--outcomes", help="Labelled outcomes: CSV (applicant_ref,outcome) or JSONL."),
    ],
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="A scorecard YAML file (default: the one in use, IDV_SCORECARD_FILE or "
            "the shipped policies/risk/scorecard.yaml).",
        ),
    ] = None,
    against: Annotated[
        Path | None, typer.Option("--against", help="A second scorecard to compare with.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay stored decisions' features under one or two scorecards against labelled
    outcomes (good / bad): approval, review and decline rates, AUC and KS, a chart.
    Relative paths are read from the current folder; `policies/...` names a shipped file
    from any folder."""
    from services.backtest import table

    with runtime() as rt:
        card = given_path(policy) if policy else rt.settings.scorecard_file
        report = rt.services.backtest.run(
            card or given_path(Path("policies/risk/scorecard.yaml")),
            outcomes,
            given_path(against) if against else None,
            actor=actor(),
        )
    if as_json:
        emit(report.model_dump())
        return
    console.print(table(report))
    console.print(
        f"labelled {report.labelled}; not automated (left out) "
        f"{report.not_automated}; unknown refs {report.unknown_refs}; "
        f"refused lines {len(report.refused)}"
    )
    for r in report.refused[:20]:
        console.print(f"refused line {r.line}: {r.field} {r.rule}")
    sys.stdout.write(report.chart + "\n")
