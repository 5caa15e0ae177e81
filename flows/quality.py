"""Data-quality gates with Great Expectations (GX Core 1.x).

Two kinds of suite, both over derived boolean columns, never over personal values:

- the batch suite (`check_batch`), run on one streaming pass over the batch before any
  paid call: share of parseable lines, valid ID numbers and phones, names present,
  duplicate refs, consents present. One failed expectation halts the batch.
- a suite per vendor answer type (`check_responses`): does every answer carry the fields
  its declared type requires (`VendorAnswer.required_fields` of the step's verifier)? A
  renamed field fails it and the source is marked degraded.

GX is imported lazily (3.5-6 s, 240 MB: STACK.md), with an ephemeral context, a pandas
DataFrame asset and `BOOLEAN_ONLY` results: GX's richer formats carry failing values.
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from intake.models import Refusal
from intake.reader import BatchPlan, parse_record, read_records
from policies.consent import ConsentPolicy
from policies.identity import IdentityRuleError, normalize_phone, validate_id_number
from policies.notices import Notice
from policies.quality import ColumnExpectation, QualityPolicy, field_present, response_columns
from verifiers.registry import vendor_answer


@dataclass
class QualityReport:
    """A suite's result: counts and expectation names, never a value."""

    suite: str
    target: str
    success: bool
    rows: int
    failed: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "target": self.target,
            "success": self.success,
            "rows": self.rows,
            "failed": self.failed,
        }


class _Gx:
    """One ephemeral GX context per process; one asset, batch definition and validation
    definition per suite, built on first use."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            # GX's dependencies warn at import (sre_constants, ...): not ours to fix.
            warnings.simplefilter("ignore", DeprecationWarning)
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

        # GX says at INFO that it made a temporary docs folder: noise on stderr (under
        # `--json` too), nothing an operator acts on. Its warnings still show. (That module
        # sets its own logger to INFO, so the package's level alone does not quiet it.)
        for name in ("great_expectations", "great_expectations.data_context.types.base"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.source = self.context.data_sources.add_pandas("idv")
        self.definitions: dict[str, Any] = {}
        self.lock = threading.Lock()

    def validation(self, suite: str, expectations: list[ColumnExpectation]) -> Any:
        with self.lock:
            found = self.definitions.get(suite)
            if found is not None:
                return found
            gx = self.gx
            batch = self.source.add_dataframe_asset(suite).add_batch_definition_whole_dataframe(
                "whole"
            )
            s = self.context.suites.add(gx.ExpectationSuite(name=suite))
            for e in expectations:
                s.add_expectation(
                    gx.expectations.ExpectColumnValuesToBeInSet(
                        column=e.column, value_set=[e.expect == "true"], mostly=e.mostly
                    )
                )
            found = self.context.validation_definitions.add(
                gx.ValidationDefinition(name=suite, data=batch, suite=s)
            )
            self.definitions[suite] = found
            return found


_GX: _Gx | None = None
_GX_LOCK = threading.Lock()


def _gx() -> _Gx:
    global _GX
    with _GX_LOCK:
        if _GX is None:
            _GX = _Gx()
        return _GX


def warm_up() -> None:
    """Import GX and build its context now (seconds, once per process) rather than in the
    first run's batch check."""
    _gx()


# The lines a failed expectation names, at most: enough to find and fix them, bounded so a
# broken file of millions does not make a report of millions.
MAX_NAMED_LINES = 1000


def run_suite(
    suite: str,
    target: str,
    columns: dict[str, list[bool]],
    expectations: list[ColumnExpectation],
    *,
    lines: BatchLines | None = None,
) -> QualityReport:
    """Validate boolean `columns` against `expectations` with GX; report failures by name
    with the observed share (a count, not a value) and, given `lines`, the line numbers
    that broke each one with the rule each broke."""
    import pandas as pd

    rows = len(next(iter(columns.values()), []))
    if rows == 0:
        return QualityReport(suite, target, True, 0)
    frame = pd.DataFrame(columns)
    result = (
        _gx()
        .validation(suite, expectations)
        .run(batch_parameters={"dataframe": frame}, result_format="BOOLEAN_ONLY")
    )
    by_column = {e.column: e for e in expectations}
    failed = []
    for r in result.results:
        if r.success:
            continue
        column = r.expectation_config.kwargs.get("column")
        e = by_column[column]
        wanted = e.expect == "true"
        holds = sum(1 for v in columns[column] if v == wanted)
        found = {
            "expectation": e.name,
            "type": r.expectation_config.type,
            "column": column,
            "mostly": e.mostly,
            "severity": e.severity,
            "observed": round(holds / rows, 4),
        }
        if lines is not None:
            broke = [i for i, v in enumerate(columns[column]) if v != wanted]
            found["lines"] = [
                {"line": lines.numbers[i], "rule": lines.rule(column, i)}
                for i in broke[:MAX_NAMED_LINES]
            ]
            found["lines_total"] = len(broke)
        failed.append(found)
    halting = any(f["severity"] == "halt" for f in failed)
    return QualityReport(suite, target, not halting, rows, failed)


# What a line that breaks a column's expectation broke, in words (never its value).
_COLUMN_RULES = {
    "id_valid": "id_number: is not a valid ID number",
    "phone_valid": "phone: is not a valid mainland mobile",
    "name_present": "name: is missing",
    "ref_duplicate": "applicant_ref: repeats an earlier line",
    "has_consent": "consents: none given",
}


@dataclass
class BatchLines:
    """Each row's line number, and why a refused line was refused, for naming the lines that
    broke an expectation."""

    numbers: list[int] = field(default_factory=list)
    refusals: dict[int, str] = field(default_factory=dict)  # row -> "field: rule"

    def rule(self, column: str, row: int) -> str:
        if column == "line_valid":
            return self.refusals.get(row, "line: is refused")
        return _COLUMN_RULES.get(column, f"{column}: does not hold")


def batch_columns(
    plan: BatchPlan,
    *,
    consent_policy: ConsentPolicy,
    notices: dict[str, Notice],
    now: datetime,
    lines: BatchLines | None = None,
) -> dict[str, list[bool]]:
    """One pass over the batch: per line, booleans derived from its fields (no values kept);
    `lines`, when given, gets each row's line number and refusal."""
    cols: dict[str, list[bool]] = {
        k: []
        for k in (
            "line_valid",
            "id_valid",
            "phone_valid",
            "name_present",
            "ref_duplicate",
            "has_consent",
        )
    }
    for chunk in plan.chunks:
        for line_no, raw in read_records(plan, chunk):
            if lines is not None:
                lines.numbers.append(line_no)
            if isinstance(raw, Refusal):
                if lines is not None:
                    lines.refusals[len(lines.numbers) - 1] = f"{raw.field}: {raw.reason}"
                for k in cols:
                    cols[k].append(k == "ref_duplicate" and line_no in plan.duplicate_lines)
                continue
            parsed = parse_record(
                raw, line_no, consent_policy=consent_policy, notices=notices, now=now
            )
            valid = not isinstance(parsed, Refusal)
            if lines is not None and isinstance(parsed, Refusal):
                lines.refusals[len(lines.numbers) - 1] = f"{parsed.field}: {parsed.reason}"
            cols["line_valid"].append(valid)
            # A parsed line has a valid ID number and phone: only a refused one is checked
            # again, field by field.
            cols["id_valid"].append(valid or _valid_id(raw, now))
            cols["phone_valid"].append(valid or _valid_phone(raw.get("phone")))
            name = raw.get("name")
            cols["name_present"].append(isinstance(name, str) and bool(name.strip()))
            cols["ref_duplicate"].append(line_no in plan.duplicate_lines)
            consents = raw.get("consents")
            cols["has_consent"].append(isinstance(consents, list) and bool(consents))
    return cols


def _valid_id(raw: Any, now: datetime) -> bool:
    id_type, number = raw.get("id_type"), raw.get("id_number")
    if not isinstance(id_type, str) or not isinstance(number, str):
        return False
    try:
        validate_id_number(id_type, number, today=now.date())
    except IdentityRuleError:
        return False
    return True


def _valid_phone(phone: Any) -> bool:
    if phone is None or (isinstance(phone, str) and not phone.strip()):
        return True  # the phone is optional; completeness is not its validity
    if not isinstance(phone, str):
        return False
    try:
        normalize_phone(phone)
    except IdentityRuleError:
        return False
    return True


def check_batch(
    plan: BatchPlan,
    policy: QualityPolicy,
    *,
    consent_policy: ConsentPolicy,
    notices: dict[str, Notice],
    now: datetime,
) -> QualityReport:
    lines = BatchLines()
    columns = batch_columns(
        plan, consent_policy=consent_policy, notices=notices, now=now, lines=lines
    )
    expectations = list(policy.batch)
    small = len(columns["line_valid"]) < policy.batch_min_lines
    suite = f"batch-{policy.version}" + ("-small" if small else "")
    if small:
        expectations = [e.model_copy(update={"severity": "warn"}) for e in expectations]
    return run_suite(suite, "batch", columns, expectations, lines=lines)


def answer_complete(step: str, shape: frozenset[str]) -> bool:
    """One answer against its type's suite: every field its answer model requires present.
    Over a single answer the suite's share is that answer, so a request verified on its own
    (`flows.on_demand`) is checked this way, without a validation run per request."""
    answer = vendor_answer(step)
    if answer is None:
        return True
    return all(field_present(shape, f) for f in answer.required_fields())


def check_responses(
    step: str, shapes: list[frozenset[str]], policy: QualityPolicy
) -> QualityReport | None:
    """The suite of one vendor answer type over a chunk's answers (the fields its answer
    model requires, the share the policy sets); None if the step has no vendor answer type
    or the chunk no answers."""
    answer = vendor_answer(step)
    if answer is None or not shapes:
        return None
    columns = response_columns(shapes, answer.required_fields())
    expectations = [
        ColumnExpectation(column=c, expect="true", mostly=policy.responses.mostly) for c in columns
    ]
    return run_suite(f"response-{step}-{policy.version}", step, columns, expectations)
