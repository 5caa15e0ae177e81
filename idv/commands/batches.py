"""`idv batch run` and `idv demo`."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from idv.shell import (
    JsonOpt,
    actor,
    app,
    batch_app,
    check_dependencies,
    check_policies,
    counts_table,
    database_location,
    faults_of,
    home,
    installed,
    prepare_environment,
    run_flow,
    runtime,
    sandbox_wired,
)
from idv.terminal import (
    EXIT_HALTED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    console,
    emit,
    error_line,
    fail,
    refuse,
)
from services.errors import ServiceError

if TYPE_CHECKING:
    from services.runs import RunReport

# The demo's synthetic run, on the sandbox, in development: a service actor as a flow's.
DEMO_ACTOR = ("demo", "operator")  # an `Actor` made when the demo runs


@batch_app.command("run")
def batch_run(
    file: Annotated[Path, typer.Argument(help="A JSONL or CSV batch.")],
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="Run against the local sandbox.")
    ] = False,
    chunk_size: Annotated[
        int | None, typer.Option(min=1, max=50_000, help="Applicants per Prefect task.")
    ] = None,
    faults: Annotated[
        str | None,
        typer.Option(
            help="Sandbox faults, e.g. latency_ms=20,5xx=0.3,timeout=0.1,429=0.05,malformed=0.01"
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the onboarding flow on a batch file. Exit 2 if every line was refused or a
    dependency (IDV_LIMITS_URL...) does not answer at start, 3 if the batch broke its
    data-quality suite (nothing was sent to any vendor) or left lines to the next run (a
    call kept back on our side: run the same file again)."""
    from services.runs import check_batch_file

    try:
        check_batch_file(file)  # an empty or malformed file is refused before anything loads
    except ServiceError as exc:
        refuse(exc, as_json=as_json)
    if faults and not sandbox:
        fail("--faults", "needs --sandbox", as_json=as_json)
    spec = faults_of(faults, as_json=as_json)
    from flows.chunks import chunk_deployment, chunk_pool
    from intake.reader import file_sha256

    with runtime() as rt:
        check_policies(rt, as_json=as_json)
        check_dependencies(rt)
        try:
            rt.services.runs.check_not_running(
                file_sha256(file), stale_s=rt.settings.run_stale_s, actor=actor()
            )
            pool = chunk_pool(rt, None)
            if pool:  # refused here, before a flow run, rather than inside one
                chunk_deployment(rt, pool)
        except ServiceError as exc:
            refuse(exc, as_json=as_json)
    prepare_environment()
    started = time.perf_counter()
    with sandbox_wired(sandbox, spec):
        run = run_flow(file, chunk_size, show_progress=not as_json)
    with runtime() as rt:
        report = rt.services.runs.report(run)
    duration_s = round(time.perf_counter() - started, 2)
    body = {**report.model_dump(mode="json"), "duration_s": duration_s}
    if report.stopped:  # Ctrl-C: the lines done are kept, the next run goes on
        if as_json:
            emit(body)
        error_line(
            "interrupted",
            f"stopped after {report.lines} lines (run {report.run_id}); run "
            f"`idv batch run {file}` again to go on: the lines done are not verified twice",
            as_json=as_json,
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    unfinished = report.halted or bool(report.deferred)
    code = EXIT_HALTED if unfinished else EXIT_USAGE if report.all_refused else 0
    if as_json:
        emit(body)
        raise typer.Exit(code)
    _print_report(report, duration_s)
    if report.all_refused:
        error_line("FILE", "every line was refused", as_json=False)
    raise typer.Exit(code)


def _print_report(report: RunReport, duration_s: float) -> None:
    """A run's report for a person: the halt and its failed expectations, the counts, the
    refused and deferred lines, the duration and fees."""
    if report.halted:
        console.print(
            f"[red]run {report.run_id} halted before any vendor call[/red]: "
            "the batch breaks its data-quality suite"
        )
    for f in report.failed_expectations:
        console.print(
            f"  {f.target}: {f.expectation} (observed {f.observed:.2%}, needs {f.mostly:.0%})"
        )
        lines = f.lines or []
        if lines:
            shown = ", ".join(f"{x.line} ({x.rule})" for x in lines[:20])
            more = f" and {len(lines) - 20} more (--json lists them all)" if len(lines) > 20 else ""
            console.print(f"    lines: {shown}{more}")
    console.print(counts_table(report.counts))
    for r in report.refused[:20]:
        console.print(f"refused line {r.line}: {r.field} {r.reason}")
    if len(report.refused) > 20:
        console.print(f"and {len(report.refused) - 20} more refused lines: --json lists them all")
    if report.deferred:
        why = sorted({f"{d.step} {(d.reason or '').split(';')[0]}" for d in report.deferred})
        console.print(
            f"[yellow]{len(report.deferred)} lines not verified[/yellow], nothing stored "
            f"for them and nobody declined: {'; '.join(why[:3])}. Run the same file again "
            "once that is mended: only those lines are verified."
        )
    console.print(
        f"run {report.run_id}: {report.lines} lines in "
        f"{duration_s} s, fees {report.fees_cents / 100:.2f} CNY"
    )


@app.command()
def demo(
    size: Annotated[
        int, typer.Option(min=1, max=100_000, help="Applicants in the synthetic batch.")
    ] = 200,
    as_json: JsonOpt = False,
) -> None:
    """Generate a synthetic batch, start the sandbox, run onboarding, print a masked summary.
    Development only: it runs as the `demo` service actor, nobody need sign in."""
    from flows.settings import Settings
    from idv.synthetic import DEMO_SEED, label_outcomes, write_batch, write_outcomes
    from services.context import Actor

    if Settings().env == "production":
        fail("IDV_ENV", "is production: the demo runs in development only", as_json=as_json)
    with runtime() as rt:
        check_dependencies(rt)
    prepare_environment()
    started = time.perf_counter()
    # The batch holds (synthetic) plaintext: it lives in a private temp dir, gone after the run.
    with tempfile.TemporaryDirectory(prefix="idv-demo-") as tmp:
        batch = write_batch(Path(tmp) / "demo-batch.jsonl", size, seed=DEMO_SEED, prefix="DEMO-")
        with sandbox_wired(True):
            run = run_flow(batch, None, show_progress=not as_json)
    with runtime() as rt:
        examples = rt.services.runs.examples(run["run_id"], limit=5, actor=Actor(*DEMO_ACTOR))
        decided = rt.services.runs.decided(prefix="DEMO-")
        db = database_location(rt)
    outcomes = write_outcomes(home() / "demo-outcomes.csv", label_outcomes(decided))
    duration = round(time.perf_counter() - started, 2)
    ui = os.environ.get("PREFECT_API_URL", "").removesuffix("/api") or None
    if as_json:
        emit(
            {
                "run_id": run["run_id"],
                "counts": run["counts"],
                "lines": run["lines"],
                "fees_cents": run["fees_cents"],
                "examples": [e.model_dump(mode="json") for e in examples],
                "database": db,
                "home": str(home()),
                "prefect_home": os.environ.get("PREFECT_HOME"),
                "prefect_ui": ui,
                "outcomes_file": str(outcomes),
                "duration_s": duration,
            }
        )
        return
    console.print(counts_table(run["counts"]))
    table = Table(title="Examples (masked)")
    for col in ("applicant", "name", "ID number", "phone", "outcome", "reasons"):
        table.add_column(col)
    for ex in examples:
        table.add_row(
            ex.applicant_ref,
            ex.name,
            ex.id_number,
            ex.phone,
            ex.outcome,
            ", ".join(ex.reasons),
        )
    console.print(table)
    console.print(f"{run['lines']} lines in {duration} s; fees {run['fees_cents'] / 100:.2f} CNY")
    console.print(f"Database: {db} (IDV_HOME {home()})")
    if ui:
        console.print(f"Prefect UI: {ui}")
    else:
        console.print(
            f"Prefect runs are stored under {os.environ.get('PREFECT_HOME')}; "
            "to browse them: PREFECT_HOME="
            + os.environ.get("PREFECT_HOME", "")
            + f" {installed('prefect')} server start, then open http://127.0.0.1:4200"
        )
    idv = installed("idv")
    console.print(f"Review queue: {idv} review list")
    if examples:
        console.print(f"Why an outcome: {idv} explain {examples[0].applicant_ref}")
    console.print(
        f"Labelled synthetic outcomes: {outcomes}; try {idv} policy backtest --outcomes {outcomes}"
    )


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="One applicant: a JSON object, as one batch line.")],
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            help="Names this request among the signed-in user's: the same key and "
            "file again answer the first result and call nobody; another file under "
            "the key is refused.",
        ),
    ] = None,
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="Verify against the local sandbox.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Verify one applicant now, through the same pipeline, consent gate and vendor contracts
    as a batch, without a flow run. Exit 2 if the line is refused."""
    import json
    import re

    if idempotency_key is not None and not re.fullmatch(r"[A-Za-z0-9_.:-]{8,128}", idempotency_key):
        fail("--idempotency-key", "must be 8 to 128 letters, digits or _.:-", as_json=as_json)
    if file.is_dir():
        fail("FILE", "is a directory, not an applicant file", as_json=as_json)
    try:
        record = json.loads(file.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        fail("FILE", "no such applicant file", as_json=as_json)
    except (UnicodeDecodeError, ValueError):
        fail("FILE", "must be one JSON object in UTF-8", as_json=as_json)
    from flows.on_demand import verify_one

    with sandbox_wired(sandbox, None), runtime() as rt:
        check_policies(rt, as_json=as_json)
        check_dependencies(rt)
        try:
            caller = actor()
            rt.services.runs.authorize(caller, operation="verify")
            result = verify_one(
                rt.on_demand, record, idempotency_key=idempotency_key, caller=caller.name
            )
        except ServiceError as exc:
            if exc.field == "Idempotency-Key":  # the service names the API's header
                fail("--idempotency-key", exc.rule, as_json=as_json)
            refuse(exc, as_json=as_json)
    replayed = result["replayed"]
    if result["disposition"] == "refused":
        fail(result["field"] or "FILE", result["rule"] or "was refused", as_json=as_json)
    if as_json:
        emit(result)
        return
    table = Table(
        "step",
        "status",
        "reason",
        title=f"{result['applicant_ref']}: {result['outcome']}"
        + (" (the first answer to this key)" if replayed else ""),
    )
    for step in result["steps"]:
        table.add_row(step["verifier"], step["status"], step["reason"])
    console.print(table)
    console.print(f"fees {result['fees_cents'] / 100:.2f} CNY")


@app.command()
def reverify(
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="Re-check against the local sandbox.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-check the applicants the re-verification policy says are due (risky by score or
    alerts, or with old evidence), under the ongoing_monitoring consent only."""
    from flows.reverification import reverify as run_reverification

    with sandbox_wired(sandbox, None), runtime() as rt:
        check_policies(rt, as_json=as_json)
        rt.services.runs.authorize(actor(), operation="reverify")
        report = run_reverification(rt).as_dict()
    if as_json:
        emit(report)
        return
    console.print(
        f"run {report['run_id']}: {report['checked']} checked, {report['calls']} "
        f"calls, {len(report['changed'])} changed, {report['unchanged']} unchanged, "
        f"{len(report['waiting_reconsent'])} waiting for consent, "
        f"{report['withdrawn']} withdrawn, fees {report['fees_cents'] / 100:.2f} CNY"
    )
    for c in report["changed"]:
        console.print(f"  {c['applicant_ref']}: {c['from']} -> {c['to']}")
