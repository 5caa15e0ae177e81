"""`idv review`, `idv audit`, `idv explain`."""

from __future__ import annotations

from pathlib import Path
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
    """Check the audit chain end to end: every event, every checkpoint outside the database,
    and the binding of every consent, decision and step result. Exit 1 at the first problem,
    naming the sequence number, the file or the record, and the rule."""
    with runtime() as rt:
        check = rt.services.audit.check_chain()
    if as_json:
        emit(check.model_dump())
    elif check.intact:
        console.print(f"audit chain intact: {check.events} events, {check.checkpoints} "
                      f"checkpoints, {check.records} bound records"
                      + (f" (events through {check.base_seq} purged)" if check.base_seq else ""))
    else:
        where = []
        if check.broken_at is not None:
            where.append(f"at event {check.broken_at}")
        if check.file:
            where.append(f"checkpoint file {check.file}")
        if check.record:
            where.append(f"record {check.record_table} {check.record}")
        console.print(f"[red]audit chain broken {', '.join(where)}[/red]: {check.rule} "
                      f"({check.events} events verified before it)")
    if not check.intact:
        raise typer.Exit(EXIT_PROBLEM)


@audit_app.command("export-proof")
def audit_export_proof(
    applicant_ref: str,
    out: Annotated[Path, typer.Option("--out", help="The bundle's folder (must not exist).")],
    sm3: Annotated[bool, typer.Option("--sm3", help="SM3 digests beside SHA-256.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a proof bundle for one applicant that a third party verifies without our
    database: `python proofcheck.py BUNDLE` (shipped inside it)."""
    from idv import proofcheck

    with runtime() as rt:
        bundle = rt.services.audit.export_proof(
            applicant_ref, out, verifier=Path(proofcheck.__file__),
            digests=("sha256", "sm3") if sm3 else ("sha256",))
    if as_json:
        emit(bundle.model_dump())
        return
    console.print(f"proof bundle written to {bundle.path}: {bundle.records} records, "
                  f"{bundle.events} chain entries, {bundle.checkpoints} checkpoints "
                  f"({', '.join(bundle.digests)}); verify with "
                  f"`python {bundle.path}/proofcheck.py {bundle.path}`")


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
