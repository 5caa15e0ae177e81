"""`idv review`, `idv audit`, `idv explain`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from idv.shell import (
    JsonOpt,
    actor,
    app,
    audit_app,
    review_app,
    runtime,
)
from idv.terminal import (
    EXIT_PROBLEM,
    console,
    emit,
)


@review_app.command("list")
def review_list(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Cases per page.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Cases to skip (the page's start).")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Open review cases, oldest first, masked, a page at a time."""
    with runtime() as rt:
        page = rt.services.review.open_cases(actor=actor(), limit=limit, offset=offset)
        label = rt.services.review.reason_label
    if as_json:
        emit({"total": page.total, "offset": page.offset, "limit": page.limit,
              "more": page.more, "cases": [c.model_dump() for c in page.cases]})
        return
    first = page.offset + 1 if page.cases else page.offset
    table = Table(title=f"Open review cases {first}-{page.offset + len(page.cases)} "
                        f"of {page.total}")
    for col in ("case", "applicant", "outcome", "name", "ID number", "phone", "reasons"):
        table.add_column(col)
    for r in page.cases:
        table.add_row(r.case_id, r.applicant_ref, r.outcome, r.name, r.id_number, r.phone or "",
                      "; ".join(label(c) for c in r.reasons))
    console.print(table)
    if page.more:
        console.print(f"{page.more} more: --offset {page.offset + len(page.cases)}")


@audit_app.command("verify")
def audit_verify(as_json: JsonOpt = False) -> None:
    """Check the audit chain end to end; exit 1 if any event was altered or removed."""
    with runtime() as rt:
        check = rt.services.audit.check_chain()
    if as_json:
        emit(check.model_dump())
    elif check.intact:
        console.print(f"audit chain intact: {check.events} events")
    else:
        console.print(f"[red]audit chain broken at event {check.broken_at}[/red] "
                      f"({check.events} events verified before it)")
    if not check.intact:
        raise typer.Exit(EXIT_PROBLEM)


@app.command()
def explain(applicant_ref: str, as_json: JsonOpt = False) -> None:
    """Why an applicant's outcome is what it is: reasons, score, policy version, steps."""
    with runtime() as rt:
        found = rt.services.explain.explain(applicant_ref)
    if as_json:
        emit(found)
        return
    kind = "automated" if found["automated"] else "for a person to decide"
    console.print(f"{applicant_ref}: {found['outcome']} ({kind}), score {found['score']}, "
                  f"policy {found['policy_version']}")
    for r in found["reasons"]:
        console.print(f"  {r['code']}: {r['en']} / {r['zh']}")
    for c in found.get("contributions") or [{"feature": k, "band": v, "points": "-"}
                                            for k, v in found["features"].items()]:
        console.print(f"  feature {c['feature']} = {c['band']}: {c['points']} points")
    for a in found.get("alerts", []):
        console.print(f"  alert {a['rule']}: {a['evidence']} (review case {a['review_case_id']})")
    for st in found["steps"]:
        console.print(f"  step {st['step']}: {st['status']} ({st['reason']}) under consent "
                      f"{', '.join(st['consent_ids']) or '-'}")
