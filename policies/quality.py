"""Data-quality policy: batch-level expectations and how strictly vendor answers must keep
their shape.

Pure: the expectations are data; `flows/quality.py` runs them with Great Expectations
over derived columns (booleans per line or per answer), never over personal values. The
fields each vendor answer must carry are not listed here: its verifier declares the answer
type once (`verifiers.vendor.VendorAnswer`), and the drift suite takes them from there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from policies.document import PolicyDocument


class ColumnExpectation(BaseModel):
    """`column` must be `expect` (true or false) on at least `mostly` of the rows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    column: str
    expect: Literal["true", "false"]
    mostly: float = Field(gt=0, le=1)
    # `halt` stops the batch before any paid call; `warn` is reported and stored only.
    severity: Literal["halt", "warn"] = "halt"

    @property
    def name(self) -> str:
        return f"{self.column}_{self.expect}_mostly_{self.mostly:g}"


class ResponseRules(BaseModel):
    """The share of a chunk's answers of one type that must carry each required field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mostly: float = Field(gt=0, le=1)


class QualityPolicy(PolicyDocument):
    version: str
    # Below this many lines a share says little: failures are reported, never halting.
    batch_min_lines: int = Field(20, ge=1)
    batch: tuple[ColumnExpectation, ...]
    responses: ResponseRules


def answer_shape(body: dict[str, object]) -> frozenset[str]:
    """The field names of a vendor answer, without its values: top-level keys, and
    `list[].key` for keys every item of a list of objects carries (`list[]:empty` for an
    empty list). Computed where the answer arrives; only the shape travels further."""
    out: set[str] = set()
    for key, value in body.items():
        out.add(key)
        if isinstance(value, list):
            if not value:
                out.add(f"{key}[]:empty")
            elif all(isinstance(i, dict) for i in value):
                common = set.intersection(*(set(i) for i in value))
                out.update(f"{key}[].{k}" for k in common)
    return frozenset(out)


def field_present(shape: frozenset[str], field: str) -> bool:
    """Whether an answer of this shape carries `field`; `list[].key` is vacuously present
    for an empty or absent list (the list itself is checked as its own field)."""
    if "[]." not in field:
        return field in shape
    parent = field.split("[].", 1)[0]
    if parent not in shape or f"{parent}[]:empty" in shape:
        return True
    return field in shape


def response_columns(
    shapes: list[frozenset[str]], fields: tuple[str, ...]
) -> dict[str, list[bool]]:
    """One boolean column per expected field (`has_<field>`), one row per answer."""
    return {f"has_{f}": [field_present(s, f) for s in shapes] for f in fields}
