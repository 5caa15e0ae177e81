"""The audit trail's pages (`/web/audit...`) for the roles with `audit_read` (auditors and
compliance officers): the chain's events newest first, narrowed by subject, actor, kind and
time (the form's times in Asia/Shanghai), each event's MAC checked; the whole chain verified
on demand (`/web/audit/verify`); a subject's proof bundle downloaded as a zip
(`/web/audit/proof`, `audit_export`), with the standalone verifier inside. Each route parses,
calls `services.audit` as the signed-in person and renders; the service checks and audits."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from idv import proofcheck
from idv.web.auth import CurrentActor, Svc, needs, require_form_token
from idv.web.cases import call, done_key, parsed, refused
from idv.web.render import HEADERS, ZONE, render
from policies.vocabulary import ApplicantRef
from services.audit import AuditService, TrailQuery
from services.context import Actor
from services.errors import ServiceError, from_validation

router = APIRouter(include_in_schema=False)
CheckedForm = Depends(require_form_token)
TRAIL_FIELDS = ("applicant_ref", "actor", "kind", "since", "until", "before")


class TrailForm(BaseModel):
    """The trail's filters as the page's form sends them (empty ones left out)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    applicant_ref: ApplicantRef | None = None
    actor: Annotated[str, StringConstraints(max_length=120)] | None = None
    kind: Annotated[str, StringConstraints(max_length=64)] | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: int | None = Field(None, ge=1)


class ProofForm(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    applicant_ref: ApplicantRef


def shanghai(at: datetime | None) -> datetime | None:
    """A `datetime-local` field's time, which the page gives in Asia/Shanghai."""
    return at.replace(tzinfo=ZONE) if at is not None and at.tzinfo is None else at


def trail_query(request: Request) -> tuple[dict[str, str], TrailQuery]:
    """The filters shown back on the page, and the service's query."""
    shown = {
        k: v.strip() for k in TRAIL_FIELDS if (v := request.query_params.get(k, "")) and v.strip()
    }
    try:
        form = TrailForm.model_validate(shown)
    except ValidationError as exc:
        raise from_validation(exc) from None
    query = form.model_dump(exclude_none=True)
    for key in ("since", "until"):
        if key in query:
            query[key] = shanghai(query[key])
    try:
        return shown, TrailQuery.model_validate(query)
    except ValidationError as exc:
        raise from_validation(exc) from None


def brief(detail: dict[str, Any]) -> list[tuple[str, str]]:
    """An event's detail as short `key: value` pairs (hashes cut, nested values as JSON)."""
    out = []
    for key, value in detail.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        out.append((key, text if len(text) <= 80 else text[:77] + "…"))
    return out


@router.get("/web/audit", response_class=HTMLResponse, openapi_extra=needs("audit_read"))
async def trail(request: Request, actor: CurrentActor, services: Svc) -> HTMLResponse:
    try:
        shown, query = trail_query(request)
        page = await call(services.audit.trail, query, actor=actor)
    except ServiceError as exc:
        return refused(request, exc, "/web/audit")
    rest = {k: v for k, v in shown.items() if k != "before"}
    return render(
        request,
        "audit.html",
        page=page,
        filters=shown,
        rest=rest,
        brief=brief,
        check=None,
        message=done_key(request),
    )


@router.get("/web/audit/verify", response_class=HTMLResponse, openapi_extra=needs("audit_read"))
async def verify(request: Request, actor: CurrentActor, services: Svc) -> HTMLResponse:
    """The whole chain checked: every event, every checkpoint, every binding."""
    try:
        check = await call(services.audit.check_chain, actor=actor)
        page = await call(services.audit.trail, {}, actor=actor)
    except ServiceError as exc:
        return refused(request, exc, "/web/audit")
    return render(
        request,
        "audit.html",
        page=page,
        filters={},
        rest={},
        brief=brief,
        check=check,
        message=None,
    )


def proof_zip(audit: AuditService, applicant_ref: str, actor: Actor) -> bytes:
    """The subject's proof bundle (`AuditService.export_proof`), zipped in memory."""
    with tempfile.TemporaryDirectory(prefix="idv-proof-") as tmp:
        folder = Path(tmp) / "bundle"
        audit.export_proof(applicant_ref, folder, verifier=Path(proofcheck.__file__), actor=actor)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                z.write(path, str(Path(f"proof-{applicant_ref}") / path.relative_to(folder)))
        return buffer.getvalue()


@router.post("/web/audit/proof", dependencies=[CheckedForm], openapi_extra=needs("audit_export"))
async def proof(request: Request, actor: CurrentActor, services: Svc) -> Response:
    """A subject's proof bundle as a zip download, for a third party to verify without our
    database (`python proofcheck.py BUNDLE --key KEY`)."""
    try:
        form = await parsed(request, ProofForm)
        data = await call(proof_zip, services.audit, form.applicant_ref, actor)
    except ServiceError as exc:
        return refused(request, exc, "/web/audit")
    name = f"proof-{form.applicant_ref}.zip"
    return Response(
        data,
        media_type="application/zip",
        headers={**HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
    )
