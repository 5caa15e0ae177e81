"""The one masking function set every output path uses (DOMAIN.md's table).

Use `mask(kind, value)` for a value whose kind is known, `mask_text(text)` for
free text (log lines, exception messages) that may carry identifiers.
The birth-date digits of an ID number are never shown.
"""

from __future__ import annotations

import re
from typing import Literal

MaskKind = Literal["id_number", "phone", "name", "address", "bank_card", "oauth_id"]


def mask_id_number(value: str) -> str:
    """First 3 and last 4 kept: `110***********002X`; the birth date is always hidden."""
    if len(value) <= 7:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


def mask_phone(value: str) -> str:
    """First 3 and last 4 of the national number: `138****8000`."""
    digits = value[3:] if value.startswith("+86") else value
    if len(digits) <= 7:
        return "*" * len(digits)
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]


def mask_name(value: str) -> str:
    """First character, then one `*` per remaining character (code points, never bytes)."""
    if not value:
        return ""
    return value[0] + "*" * (len(value) - 1)


def mask_address(value: str) -> str:
    """Province and city only; everything after the first city marker is hidden."""
    # A mainland address names the province (省/自治区) then the city (市/州/盟);
    # municipalities (北京市…) end at their first 市.
    match = re.match(r"^(.*?(?:省|自治区))?(.*?(?:市|自治州|州|盟|地区))", value)
    if not match:
        return "…"
    return match.group(0) + "…"


def mask_bank_card(value: str) -> str:
    """First 6 and last 4: `622202******1234`."""
    if len(value) <= 10:
        return "*" * len(value)
    return value[:6] + "*" * (len(value) - 10) + value[-4:]


def mask_oauth_id(value: str) -> str:
    """First 4 and last 4: `oX3d…9aQe`."""
    if len(value) <= 8:
        return "…"
    return value[:4] + "…" + value[-4:]


_MASKERS = {
    "id_number": mask_id_number,
    "phone": mask_phone,
    "name": mask_name,
    "address": mask_address,
    "bank_card": mask_bank_card,
    "oauth_id": mask_oauth_id,
}


def mask(kind: MaskKind, value: str | None) -> str:
    """Mask `value` as DOMAIN.md's table says for `kind`; `None` shows as empty."""
    if value is None:
        return ""
    return _MASKERS[kind](value)


# 18-character resident/permit IDs (17 digits + digit or X) and old 15-digit IDs,
# not embedded in longer digit runs, so order numbers and timestamps survive.
_ID_RE = re.compile(r"(?<![0-9A-Za-z])(\d{17}[\dXx]|\d{15})(?![0-9A-Za-z])")
# Mainland mobiles with optional +86/86 prefix and optional separators after 3 and 7 digits.
_PHONE_RE = re.compile(r"(?<!\d)(?:\+?86[ -]?)?(1[3-9]\d)[ -]?(\d{4})[ -]?(\d{4})(?!\d)")
# Bank cards: 16-19 digits.
_CARD_RE = re.compile(r"(?<!\d)(\d{16,19})(?!\d)")


def mask_text(text: str, names: tuple[str, ...] = ()) -> str:
    """Mask every identifier that free text may carry: ID numbers, phones, cards, known names.

    Used by the logging filter and for exception text; `names` are values we hold
    for the records in hand (names cannot be recognised by shape).
    """
    out = _ID_RE.sub(lambda m: mask_id_number(m.group(1).upper()), text)
    out = _CARD_RE.sub(lambda m: mask_bank_card(m.group(1)), out)
    out = _PHONE_RE.sub(lambda m: mask_phone(m.group(1) + m.group(2) + m.group(3)), out)
    for name in names:
        if name:
            out = out.replace(name, mask_name(name))
    return out
