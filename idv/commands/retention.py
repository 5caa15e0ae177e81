"""`idv retention`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from idv.shell import JsonOpt, actor, retention_app, runtime
from idv.terminal import console, emit

if TYPE_CHECKING:
    from services.retention import RetentionReport


def _render(report: RetentionReport, *, title: str) -> None:
    table = Table(title=title)
    for col in ("class", "floor (days)", "ceiling (days)", "past ceiling before", "records"):
        table.add_column(col, justify="right" if "days" in col or col == "records" else "left")
    for name, rule in report.classes.items():
        count = report.counts.get(name)
        shown = (
            str(count)
            if count is not None
            else (f"{report.awaiting.get(name, 0)} (awaiting the chain's purge)")
        )
        table.add_row(name, str(rule.floor_days), str(rule.ceiling_days), rule.cutoff[:10], shown)
    console.print(table)
    console.print(
        f"policy {report.policy_version}; subjects under a legal hold are kept "
        f"({report.held_subjects})"
    )


@retention_app.command("plan")
def retention_plan(as_json: JsonOpt = False) -> None:
    """What a purge now would remove, by record class (a dry run: nothing is written)."""
    with runtime() as rt:
        report = rt.services.retention.plan(actor=actor())
    if as_json:
        emit(report.model_dump(exclude_none=True))
    else:
        _render(report, title="Past their ceiling now (dry run)")


@retention_app.command("purge")
def retention_purge(as_json: JsonOpt = False) -> None:
    """Remove every record past its ceiling (none under a legal hold); audited. The
    `retention` deployment runs the same purge on its schedule."""
    with runtime() as rt:
        report = rt.services.retention.purge(actor=actor())
    if as_json:
        emit(report.model_dump(exclude_none=True))
    else:
        _render(report, title=f"Purged (audit event {report.audit_seq})")
