"""JSON for the database and the audit chain.

orjson writes both: the JSON columns and the canonical form (sorted keys, no spaces,
UTF-8) that the audit chain's MACs and the consent ledger's dedup keys are taken over.
For strings, integers, lists and maps the canonical form is byte for byte the standard
library's `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`, so
dedup keys do not change. Floats in exponent form are written differently (`0.00001`
for `1e-05`): `canonical_stdlib` is kept to verify events written in that earlier form,
and for what orjson cannot write (integers past 64 bits).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_CANONICAL = (
    orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)
_COLUMN = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def canonical_stdlib(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode("utf-8")


def canonical(obj: Any) -> bytes:
    """The bytes a MAC or a dedup key is taken over: the same for the same content."""
    try:
        return orjson.dumps(obj, option=_CANONICAL, default=str)
    except orjson.JSONEncodeError:
        return canonical_stdlib(obj)


def column_dumps(obj: Any) -> str:
    """A JSON column's text. Like the standard library without a `default`, it refuses
    datetimes and dataclasses rather than writing them in a form nobody chose."""
    try:
        return orjson.dumps(obj, option=_COLUMN).decode("utf-8")
    except orjson.JSONEncodeError:
        return json.dumps(obj)


column_loads = orjson.loads
