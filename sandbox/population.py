"""Deterministic synthetic answers, derived from the input, so tests can predict them."""

from __future__ import annotations

import hashlib
import unicodedata
from datetime import UTC, date, datetime
from typing import Literal

Result = Literal["MATCH", "MISMATCH", "NO_RECORD"]


def normalize_id(id_number: str) -> str:
    return "".join(unicodedata.normalize("NFKC", id_number).split()).upper()


def three_element_result(name: str, id_number: str, phone: str | None = None) -> Result:
    """The identity source's answer: by the first byte of SHA-256 of the ID number, mod 20:
    0 -> NO_RECORD (5%), 1 or 2 -> MISMATCH (10%), anything else -> MATCH (85%).
    Name and phone do not change it, so a test can predict from the ID number alone."""
    del name, phone
    bucket = hashlib.sha256(normalize_id(id_number).encode("utf-8")).digest()[0] % 20
    if bucket == 0:
        return "NO_RECORD"
    if bucket in (1, 2):
        return "MISMATCH"
    return "MATCH"


def as_of_for(endpoint: str, today: date | None = None) -> date:
    """The data's as-of date: identity checks are real time."""
    del endpoint
    return today or datetime.now(UTC).date()
