"""Identity-document, phone and name rules (DOMAIN.md): normalise, then validate.

Pure functions. Each failure raises `IdentityRuleError(field, rule)`, whose text
names the field and the rule, never the value. Adding an identity document is
a row in `ID_TYPES`, not a new code path.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date

import phonenumbers
from stdnum.cn import ric
from stdnum.exceptions import InvalidComponent


class IdentityRuleError(ValueError):
    """A value broke a rule. Carries the field and the rule only."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


@dataclass(frozen=True)
class IdTypeRule:
    """How one kind of identity document is written and checked."""

    label: str
    # Why a regex per type: the shapes differ (18 digits with a check char, H/M + 8 digits...).
    pattern: re.Pattern[str]
    gb11643: bool  # carries the GB 11643 birth date and check character
    region_prefixes: tuple[str, ...] = ()  # allowed leading division codes, empty = any
    convert_15: bool = False  # old 15-digit numbers are converted to 18


ID_TYPES: dict[str, IdTypeRule] = {
    "resident_id": IdTypeRule(
        "Resident identity card",
        re.compile(r"\d{17}[\dX]|\d{15}"),  # 18 with check char, or the old 15-digit form
        gb11643=True,
        convert_15=True,
    ),
    "hmt_residence_permit": IdTypeRule(
        "Residence permit for Hong Kong, Macao and Taiwan residents",
        re.compile(r"8[123]0000\d{11}[\dX]"),  # region codes 810000, 820000, 830000
        gb11643=True,
        region_prefixes=("810000", "820000", "830000"),
    ),
    "foreign_permanent_resident": IdTypeRule(
        "Foreign permanent resident ID card (2023)",
        re.compile(r"9\d{16}[\dX]"),  # the 2023 card starts with 9
        gb11643=True,
    ),
    "hk_mo_travel_permit": IdTypeRule(
        "Mainland travel permit for Hong Kong and Macao residents",
        re.compile(r"[HM]\d{8}(\d{2})?"),  # H/M + 8 digits (11 characters on older issues)
        gb11643=False,
    ),
    "tw_travel_permit": IdTypeRule(
        "Mainland travel permit for Taiwan residents",
        re.compile(r"\d{8}"),
        gb11643=False,
    ),
}

# Province-level division codes (GB/T 2260 first two digits), plus 71 Taiwan, 81-83 HMT.
_PROVINCE_CODES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 "
    "61 62 63 64 65 71 81 82 83".split()
)

_CHECK_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"


def check_character(first17: str) -> str:
    """The GB 11643 check character for 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, _CHECK_WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def normalize_id_number(raw: str) -> str:
    """NFKC (full-width digits), strip all whitespace, upper-case `x`."""
    text = unicodedata.normalize("NFKC", raw)
    return "".join(text.split()).upper()


def validate_id_number(
    id_type: str, raw: str, *, today: date, field: str = "id_number"
) -> str:
    """Normalise and validate; return the canonical number or raise `IdentityRuleError`."""
    rule = ID_TYPES.get(id_type)
    if rule is None:
        raise IdentityRuleError("id_type", f"must be one of {', '.join(sorted(ID_TYPES))}")
    value = normalize_id_number(raw)
    if not value:
        raise IdentityRuleError(field, "must not be empty")
    if rule.pattern.fullmatch(value) is None:
        raise IdentityRuleError(field, f"does not have the shape of a {id_type}")
    if not rule.gb11643:
        return value
    if len(value) == 15:
        if not rule.convert_15:
            raise IdentityRuleError(field, "15-digit numbers are not issued for this type")
        body = value[:6] + "19" + value[6:]
        value = body + check_character(body)
    if value[-1] != ric.calc_check_digit(value):
        raise IdentityRuleError(field, "check character does not match (GB 11643)")
    try:
        # stdnum checks the birth date; its birth-place check is skipped on purpose: the
        # division table lags new codes, and a code is where one first registered.
        ric.get_birth_date(value)
    except InvalidComponent:
        raise IdentityRuleError(field, "birth date is not a real date") from None
    if value[:2] not in _PROVINCE_CODES and not rule.region_prefixes:
        if not (id_type == "foreign_permanent_resident" and value[0] == "9"):
            raise IdentityRuleError(field, "region code is not a province of China")
    birth = ric.get_birth_date(value)
    if birth > today:
        raise IdentityRuleError(field, "birth date is in the future")
    if birth.year < 1900:
        raise IdentityRuleError(field, "birth date is before 1900")
    if rule.region_prefixes and not value.startswith(rule.region_prefixes):
        raise IdentityRuleError(field, "region code is not allowed for this type")
    return value


# Virtual operators (MVNO) number ranges: a fraud signal, never a refusal.
_VIRTUAL_PREFIXES = ("170", "171", "162", "165", "167")


# A mainland mobile already written plainly (11 digits, optionally after +86): its E.164 form
# is "+86" and the digits, as `phonenumbers` would give; anything else goes the long way.
_PLAIN_MOBILE = re.compile(r"(?:\+86)?(1[3-9][0-9]{9})")


def normalize_phone(raw: str, *, field: str = "phone") -> str:
    """Accept `+86`, spaces and dashes; return E.164 of a mainland mobile or raise."""
    plain = _PLAIN_MOBILE.fullmatch(raw)
    if plain is not None:
        return "+86" + plain.group(1)
    text = unicodedata.normalize("NFKC", raw).strip()
    if not text:
        raise IdentityRuleError(field, "must not be empty")
    try:
        parsed = phonenumbers.parse(text, "CN")
    except phonenumbers.NumberParseException:
        raise IdentityRuleError(field, "is not a phone number") from None
    national = str(parsed.national_number)
    if parsed.country_code != 86:
        raise IdentityRuleError(field, "must be a mainland China mobile number (+86)")
    # Mainland mobiles: 11 digits starting 13-19 (DOMAIN.md).
    if re.fullmatch(r"1[3-9]\d{9}", national) is None:
        raise IdentityRuleError(field, "must be an 11-digit mainland mobile number starting 13-19")
    if not phonenumbers.is_possible_number(parsed):
        raise IdentityRuleError(field, "is not a possible mobile number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def is_virtual_operator(e164: str) -> bool:
    """True for virtual-operator ranges (170, 171, 162, 165, 167)."""
    national = e164.removeprefix("+86")
    return national.startswith(_VIRTUAL_PREFIXES)


# Characters typed for the minority-name middle dot (U+00B7): katakana middle dot,
# bullet, full stops, the one-dot leader and the hyphenation point.
_DOT_VARIANTS = str.maketrans(
    {c: "\u00b7" for c in "\u30fb\u2022\uff0e.\u2024\u2027\u2219\uff65\u0387"}
)
NAME_MAX_CHARS = 40


def normalize_name(raw: str, *, field: str = "name") -> str:
    """NFC, trim, unify middle-dot variants, bound the length in code points."""
    text = unicodedata.normalize("NFC", raw).strip().translate(_DOT_VARIANTS)
    # Tabs, newlines and other controls inside a name are damage, not spacing.
    if any(unicodedata.category(c).startswith("C") for c in text):
        raise IdentityRuleError(field, "must not contain control characters")
    # Collapse internal whitespace runs: "张 伟" and "张  伟" are the same person.
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s*\u00b7\s*", "\u00b7", text)
    if not text:
        raise IdentityRuleError(field, "must not be empty")
    if len(text) > NAME_MAX_CHARS:
        raise IdentityRuleError(field, f"must be at most {NAME_MAX_CHARS} characters")
    if text.startswith("\u00b7") or text.endswith("\u00b7") or "\u00b7\u00b7" in text:
        raise IdentityRuleError(field, "middle dot must separate name parts")
    if any(c.isdigit() for c in text):
        raise IdentityRuleError(field, "must not contain digits")
    return text
