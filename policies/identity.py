"""Identity-document, phone and name rules (DOMAIN.md): normalise, then validate.

Pure functions over `identity.yaml` (parsed once by `identity_policy()`; pass another
`IdentityPolicy` to judge by other rules). Each failure raises `IdentityRuleError(field,
rule)`, whose text names the field and the rule, never the value. Adding an identity
document is an entry under `id_types`, not a new code path; each entry says in which script
its holder's name is written.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from stdnum import numdb
from stdnum.cn import ric
from stdnum.exceptions import InvalidComponent

from policies.document import PolicyDocument
from policies.shipped import read_text


class IdentityRuleError(ValueError):
    """A value broke a rule. Carries the field and the rule only."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


Script = Literal["han", "latin"]


class IdTypeRule(BaseModel):
    """How one kind of identity document is written and checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    # Why a pattern per type: the shapes differ (18 digits with a check char, H/M + 8
    # digits...). Compiled ASCII-only, so `\d` is [0-9].
    pattern: re.Pattern[str]
    gb11643: bool  # carries the GB 11643 birth date and check character
    region_prefixes: tuple[str, ...] = ()  # allowed leading division codes, empty = any
    division_code: bool = False  # the first six digits must be a division code that existed
    first_generation: Literal["refuse", "convert"] | None = None  # 15-digit numbers
    name: tuple[Script, ...] = Field(min_length=1)  # the scripts its name may be written in

    @field_validator("pattern", mode="before")
    @classmethod
    def _compile(cls, value: Any) -> Any:
        return re.compile(value, re.ASCII) if isinstance(value, str) else value


class HanNames(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    max_chars: int = Field(ge=1)
    ranges: tuple[tuple[int, int], ...] = Field(min_length=1)
    also: str = ""
    separator: str = Field(min_length=1, max_length=1)
    separator_variants: str = ""


class LatinNames(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    max_chars: int = Field(ge=1)
    ranges: tuple[tuple[int, int], ...] = Field(min_length=1)
    marks: tuple[tuple[int, int], ...] = ()
    variants: dict[str, str] = {}


class NameScripts(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    han: HanNames
    latin: LatinNames


class IdentityPolicy(PolicyDocument):
    """`identity.yaml`: the identity documents, the first-generation rule, the name scripts."""

    id_types: dict[str, IdTypeRule] = Field(min_length=1)
    first_generation_rule: str
    division_codes_added: dict[str, str] = {}
    names: NameScripts

    @model_validator(mode="after")
    def _added_codes_are_six_digits(self) -> IdentityPolicy:
        if any(re.fullmatch(r"[0-9]{6}", code) is None for code in self.division_codes_added):
            raise ValueError("an added division code is six ASCII digits")
        return self


@cache
def identity_policy() -> IdentityPolicy:
    """`identity.yaml`, parsed once: the rules a caller that passes no policy is judged by."""
    return IdentityPolicy.from_yaml(read_text("identity.yaml"), source="policies/identity.yaml")


def _policy(policy: IdentityPolicy | None) -> IdentityPolicy:
    return policy if policy is not None else identity_policy()


def _id_type(policy: IdentityPolicy, id_type: str) -> IdTypeRule:
    rule = policy.id_types.get(id_type)
    if rule is None:
        raise IdentityRuleError("id_type", f"must be one of {', '.join(sorted(policy.id_types))}")
    return rule


# Province-level division codes (GB/T 2260 first two digits), plus 71 Taiwan, 81-83 HMT.
_PROVINCE_CODES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 "
    "61 62 63 64 65 71 81 82 83".split()
)

_CHECK_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"

RULE_DIVISION = "division code has never existed (GB/T 2260)"


def check_character(first17: str) -> str:
    """The GB 11643 check character for 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, _CHECK_WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


@cache
def _division_table() -> numdb.NumDB:
    # python-stdnum's GB/T 2260 table (`stdnum/cn/loc.dat`), read by stdnum once.
    return numdb.get("cn/loc")


def division_code_existed(code: str, *, policy: IdentityPolicy | None = None) -> bool:
    """True if a six-digit administrative division code has existed at any time.

    stdnum's own `ric.validate` also wants the code to have existed in the holder's birth
    year; that refuses real people: a number is issued where one registers, often years
    after birth (房山区 110111 exists from 1986, people born there earlier hold it)."""
    if code in _policy(policy).division_codes_added:
        return True
    parts = _division_table().info(code)
    return len(parts) == 2 and "county" in parts[1][1]


def normalize_id_number(raw: str) -> str:
    """NFKC (full-width digits), strip all whitespace, upper-case `x`."""
    text = unicodedata.normalize("NFKC", raw)
    return "".join(text.split()).upper()


def validate_id_number(
    id_type: str,
    raw: str,
    *,
    today: date,
    field: str = "id_number",
    policy: IdentityPolicy | None = None,
) -> str:
    """Normalise and validate; return the canonical number or raise `IdentityRuleError`."""
    policy = _policy(policy)
    rule = _id_type(policy, id_type)
    value = normalize_id_number(raw)
    if not value:
        raise IdentityRuleError(field, "must not be empty")
    if rule.pattern.fullmatch(value) is None:
        raise IdentityRuleError(field, f"does not have the shape of a {id_type}")
    if not rule.gb11643:
        return value
    if len(value) == 15:
        if rule.first_generation is None:
            raise IdentityRuleError(field, "15-digit numbers are not issued for this type")
        if rule.first_generation == "refuse":
            raise IdentityRuleError(field, policy.first_generation_rule)
        body = value[:6] + "19" + value[6:]
        value = body + check_character(body)
    if value[-1] != ric.calc_check_digit(value):
        raise IdentityRuleError(field, "check character does not match (GB 11643)")
    try:
        ric.get_birth_date(value)
    except InvalidComponent:
        raise IdentityRuleError(field, "birth date is not a real date") from None
    if value[:2] not in _PROVINCE_CODES and not rule.region_prefixes:
        if not (id_type == "foreign_permanent_resident" and value[0] == "9"):
            raise IdentityRuleError(field, "region code is not a province of China")
    if rule.division_code and not division_code_existed(value[:6], policy=policy):
        raise IdentityRuleError(field, RULE_DIVISION)
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
    # Eleven digits 13-19 with spaces or dashes are a mainland mobile, given to phonenumbers
    # as +86: dialling from CN, it would read `179xx00...` as a carrier's international
    # prefix and the rest as a number abroad.
    plain = _PLAIN_MOBILE.fullmatch(re.sub(r"[\s-]", "", text))
    if plain is not None:
        text = "+86" + plain.group(1)
    import phonenumbers  # loaded with the first phone read: most commands read none

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


# Names: the script each document's name is written in (`names` in identity.yaml).

RULE_NAME_EMPTY = "must not be empty"
RULE_NAME_CONTROL = "must not contain control characters"
RULE_NAME_DIGITS = "must not contain digits"
RULE_NAME_DOT = "middle dot must separate name parts"
RULE_NAME_HAN = "must be Chinese characters, with a middle dot (·) between the parts of a name"
RULE_NAME_LATIN = (
    "must be Latin letters, with spaces, hyphens, apostrophes or periods "
    "between the parts of a name"
)

# Latin name parts joined by one separator each: "J. R.", "Anne-Marie", "O'Neil", a space;
# a closing period ("Jr."). Letters are read as "a" first (see `_latin_name`).
_LATIN_SHAPE = re.compile(r"a+(?:(?:\. ?|[-' ])a+)*\.?")


def _in(ranges: tuple[tuple[int, int], ...], char: str) -> bool:
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in ranges)


def _length(text: str, limit: int, field: str) -> None:
    # Code points, never bytes or UTF-16 units: 𠮷 is one character.
    if len(text) > limit:
        raise IdentityRuleError(field, f"must be at most {limit} characters")


def _han_name(text: str, rules: HanNames, field: str) -> str:
    dot = rules.separator
    text = text.translate({ord(c): dot for c in rules.separator_variants})
    # No name on the card holds a space; a space (often U+3000 padding a two-character
    # name to three) is layout, and around a middle dot it is spacing.
    text = "".join(text.split())
    _length(text, rules.max_chars, field)
    if any(c.isdigit() for c in text):
        raise IdentityRuleError(field, RULE_NAME_DIGITS)
    if any(c != dot and c not in rules.also and not _in(rules.ranges, c) for c in text):
        raise IdentityRuleError(field, RULE_NAME_HAN)
    if text.startswith(dot) or text.endswith(dot) or dot + dot in text:
        raise IdentityRuleError(field, RULE_NAME_DOT)
    return text


def _latin_name(text: str, rules: LatinNames, field: str) -> str:
    text = " ".join(text.translate({ord(k): v for k, v in rules.variants.items()}).split())
    _length(text, rules.max_chars, field)
    if any(c.isdigit() for c in text):
        raise IdentityRuleError(field, RULE_NAME_DIGITS)
    shape = []
    for c in text:
        if _in(rules.ranges, c):
            shape.append("a")
        elif _in(rules.marks, c) and shape[-1:] == ["a"]:
            continue  # an accent rides on the letter before it
        elif c in " -'.":
            shape.append(c)
        else:
            raise IdentityRuleError(field, RULE_NAME_LATIN)
    if _LATIN_SHAPE.fullmatch("".join(shape)) is None:
        raise IdentityRuleError(field, RULE_NAME_LATIN)
    return text


def validate_name(
    id_type: str, raw: str, *, field: str = "name", policy: IdentityPolicy | None = None
) -> str:
    """The name as the `id_type`'s document writes it (NFC, its script's separators
    unified), or `IdentityRuleError` naming the rule it breaks. A type whose name may be
    written in either of two scripts accepts a name wholly in one of them."""
    policy = _policy(policy)
    rule = _id_type(policy, id_type)
    text = unicodedata.normalize("NFC", raw).strip()
    # Tabs, newlines and other controls inside a name are damage, not spacing.
    # (Unassigned code points are not refused here: this Python's Unicode may predate
    # Extensions H and I.)
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in text):
        raise IdentityRuleError(field, RULE_NAME_CONTROL)
    if not text:
        raise IdentityRuleError(field, RULE_NAME_EMPTY)
    refusals: list[IdentityRuleError] = []
    for script in rule.name:
        try:
            if script == "han":
                return _han_name(text, policy.names.han, field)
            return _latin_name(text, policy.names.latin, field)
        except IdentityRuleError as exc:
            refusals.append(exc)
    if len({r.rule for r in refusals}) == 1:
        raise refusals[0]
    labels = " or ".join(getattr(policy.names, s).label for s in rule.name)
    raise IdentityRuleError(field, f"must be written in {labels} ({id_type})")
