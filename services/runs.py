"""Onboarding runs seen from outside the flow: what can be refused before anything starts,
and what a finished run produced (every line an applicant or a refusal), masked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from intake.reader import BatchFormatError, check_batch
from policies.masking import mask
from services.context import Actor
from services.errors import InvalidInput
from storage.store import Store
from storage.subjects import SubjectUnavailableError


def check_batch_file(path: Path) -> str:
    """The batch's format, or `InvalidInput` naming the file or column and the rule: found
    before Prefect or any vendor is started."""
    try:
        return check_batch(path)
    except BatchFormatError as exc:
        raise InvalidInput(exc.field, exc.rule) from None


class RunService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def report(self, run: dict[str, Any]) -> dict[str, Any]:
        """The `batch run` report: counts, fees, each line's outcome and steps, refusals
        with field and rule, the data-quality results. No personal values."""
        run_id = run["run_id"]
        applicants: list[dict[str, Any]] = []
        refused: list[dict[str, Any]] = []
        for line in self.store.runs.lines(run_id):
            if line.disposition == "refused":
                refused.append({"line": line.line_no, "applicant_ref": line.applicant_ref,
                                "field": line.field, "reason": line.reason})
                continue
            stored = self.store.applicants.get(line.applicant_ref or "")
            applicants.append({
                "line": line.line_no, "applicant_ref": line.applicant_ref,
                "outcome": line.outcome, "disposition": line.disposition,
                "steps": [{"verifier": s.step, "status": s.status, "reason": s.reason}
                          for s in (stored.steps if stored else ())],
            })
        quality = self.store.quality.for_run(run_id)
        return {"run_id": run_id, "counts": run["counts"], "fees_cents": run["fees_cents"],
                "lines": run["lines"], "halted": bool(run.get("halted")),
                "failed_expectations": [dict(f, target=q["target"]) for q in quality
                                        for f in q["failed"]],
                "quality": quality, "applicants": applicants, "refused": refused,
                "all_refused": bool(refused) and not applicants}

    def examples(self, run_id: str, *, limit: int, actor: Actor) -> list[dict[str, Any]]:
        """A few of the run's applicants, one per outcome first, identifiers masked (the
        reads are audited as any other)."""
        out: list[dict[str, Any]] = []
        lines = [x for x in self.store.runs.lines(run_id) if x.disposition != "refused"]
        picked: dict[str, Any] = {}
        for line in lines:
            picked.setdefault(line.outcome, line)
        chosen = list(picked.values()) + [x for x in lines if x not in picked.values()]
        for line in chosen:
            if len(out) >= limit:
                break
            try:
                person = self.store.applicants.reveal_by_ref(
                    line.applicant_ref or "", actor=actor.name, purpose="run summary")
            except (SubjectUnavailableError, KeyError):  # erased or restricted: not shown
                continue
            stored = self.store.applicants.get(line.applicant_ref or "")
            out.append({
                "applicant_ref": line.applicant_ref,
                "name": mask("name", person.name.get_secret_value()),
                "id_number": mask("id_number", person.id_number.get_secret_value()),
                "phone": mask("phone", person.phone.get_secret_value() if person.phone else None),
                "outcome": line.outcome,
                "reasons": list(stored.reasons) if stored else [],
            })
        return out

    def decided(self, *, prefix: str = "") -> list[dict[str, Any]]:
        """Stored decisions (ref, outcome, features) whose ref starts with `prefix`."""
        return [d for d in self.store.decisions.all_decided()
                if d["applicant_ref"].startswith(prefix)]

