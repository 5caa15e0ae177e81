"""The one masking function set every output path uses (DOMAIN.md's table).

Use `mask(kind, value)` for a value whose kind is known, `mask_text(text)` for
free text (log lines, exception messages) that may carry identifiers.
The birth-date digits of an ID number are never shown.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from policies.shipped import read_text

MaskKind = Literal["id_number", "phone", "name", "address", "bank_card", "oauth_id"]


def mask_id_number(value: str) -> str:
    """The check character alone: `*****************X`; the birth date is always hidden."""
    return mask("id_number", value)


def mask_phone(value: str) -> str:
    """The first 3 digits of the national number: `138********`."""
    return mask("phone", value)


def mask_name(value: str) -> str:
    """First character, then one `*` per remaining character (code points, never bytes)."""
    return mask("name", value)


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
    return mask("bank_card", value)


def mask_oauth_id(value: str) -> str:
    """First 4 and last 4: `oX3d…9aQe`."""
    return mask("oauth_id", value)


class MaskRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    head: int = Field(0, ge=0)
    tail: int = Field(0, ge=0)
    fill: str = "*"
    once: bool = False
    strip_prefix: str = ""
    style: Literal["keep", "province_city"] = "keep"

    def apply(self, value: str) -> str:
        if self.style == "province_city":
            return mask_address(value)
        value = value.removeprefix(self.strip_prefix) if self.strip_prefix else value
        hidden = len(value) - self.head - self.tail
        if hidden <= 0 or (self.tail == 0 and self.head >= len(value) > 1):
            # Too short to show any part safely.
            return self.fill if self.once else self.fill * len(value)
        fill = self.fill if self.once else self.fill * hidden
        return value[: self.head] + fill + (value[-self.tail :] if self.tail else "")


class MaskingPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    kinds: dict[str, MaskRule]


@cache
def masking_policy() -> MaskingPolicy:
    """`masking.yaml`, read once: the table every output path applies."""
    return MaskingPolicy.model_validate(yaml.safe_load(read_text("masking.yaml")))


def mask(kind: MaskKind, value: str | None) -> str:
    """Mask `value` as the masking policy says for `kind`; `None` shows as empty.
    The one function every output path uses: terminal, API, pages, logs, artifacts, exports."""
    if value is None or value == "":
        return ""
    return masking_policy().kinds[kind].apply(value)


# 18-character resident/permit IDs (17 digits + digit or X) and old 15-digit IDs,
# not embedded in longer digit runs, so order numbers and timestamps survive.
ID_PATTERN = r"(?<![0-9A-Za-z])(\d{17}[\dXx]|\d{15})(?![0-9A-Za-z])"
# Mainland mobiles with optional +86/86 prefix and optional separators after 3 and 7 digits.
PHONE_PATTERN = r"(?<!\d)(?:\+?86[ -]?)?(1[3-9]\d)[ -]?(\d{4})[ -]?(\d{4})(?!\d)"
# Bank cards: 16-19 digits.
CARD_PATTERN = r"(?<!\d)(\d{16,19})(?!\d)"
# The shapes above are written so that Python and ECMA-262 (JSON Schema, OpenAPI) read
# them alike: `policies.vocabulary` puts them in the schema of an applicant ref.
_ID_RE = re.compile(ID_PATTERN)
_PHONE_RE = re.compile(PHONE_PATTERN)
_CARD_RE = re.compile(CARD_PATTERN)
# OAuth secrets and identifiers carried in a URL or a form (a logged request line).
_OAUTH_PARAM_RE = re.compile(
    r"(?i)\b(code|state|access_token|refresh_token|id_token|secret|client_secret|openid|"
    r"unionid|code_verifier|nonce)=([^&\s\"'#]+)"
)


def mask_text(text: str, names: tuple[str, ...] = ()) -> str:
    """Mask every identifier that free text may carry: ID numbers, phones, cards, known names.

    Used by the logging filter and for exception text; `names` are values we hold
    for the records in hand (names cannot be recognised by shape).
    """
    out = _OAUTH_PARAM_RE.sub(lambda m: f"{m.group(1)}=[redacted]", text)
    out = _ID_RE.sub(lambda m: mask_id_number(m.group(1).upper()), out)
    out = _CARD_RE.sub(lambda m: mask_bank_card(m.group(1)), out)
    out = _PHONE_RE.sub(lambda m: mask_phone(m.group(1) + m.group(2) + m.group(3)), out)
    for name in names:
        if name:
            out = out.replace(name, mask_name(name))
    return out
