"""Enforcement case numbers (执行案号) read by the rules of their era.

Since 2016 a number is `(year)` + court code + [special-trial code] + type code + serial +
`号` (法〔2015〕137号, amended by 法〔2018〕335号); before, `(year)` + the court's own
abbreviation + type + `字第` + serial + `号`. The court and type codes are data
(`case_numbers.yaml`, parsed once by `case_number_table()`).

A number that breaks its era's rule is evidence of a fabricated record: a review signal,
never a decline by itself. Each verdict names the rule broken, never the value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from policies.document import PolicyDocument
from policies.shipped import read_text

Era = Literal["2016", "before_2016"]
Level = Literal["supreme", "high", "intermediate", "basic"]


class IntermediateRange(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    first: int = Field(ge=1, le=99)
    last: int = Field(ge=1, le=99)
    kind: str


class CourtCodes(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    supreme: str
    high: dict[str, str] = Field(min_length=1)
    intermediate: tuple[IntermediateRange, ...]
    basic_kinds: dict[str, str] = {}


class SpecialTrial(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    from_year: int


class OldForm(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    types: tuple[str, ...] = Field(min_length=1)
    court_max_chars: int = Field(ge=1)


class CaseNumberTable(PolicyDocument):
    """`case_numbers.yaml`: the court and type codes and the years each form is valid for."""

    earliest_year: int
    in_force_year: int
    old_form_last_year: int
    serial_max_digits: int = Field(ge=1)
    courts: CourtCodes
    enforcement_types: dict[str, str] = Field(min_length=1)
    special_trial: dict[str, SpecialTrial] = {}
    before_2016: OldForm

    @model_validator(mode="after")
    def _codes_are_single_characters(self) -> CaseNumberTable:
        # The parser reads a high court's code as one character and a special-trial code
        # as one character (Art. 4; 法〔2018〕335号 art. 1).
        if any(len(code) != 1 for code in self.courts.high):
            raise ValueError("a high court's code is one character")
        if any(len(code) != 1 for code in self.special_trial):
            raise ValueError("a special-trial code is one character")
        return self


@dataclass(frozen=True)
class CaseNumber:
    """A number read by its era's rule. `court_kind` says which special court, if any
    (railway, maritime, intellectual_property, financial, internet, ...)."""

    era: Era
    year: int
    court: str
    level: Level | None  # None before 2016: an abbreviation does not say
    court_kind: str | None
    special_trial: str | None
    type_code: str
    serial: int


class CaseNumberError(ValueError):
    """A suspect number: `rule` names the rule it broke, never the value."""

    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule


# Rules, worded once: tests and reviewers read the same text.
RULE_DIGITS = "digits must be ASCII or full-width"
RULE_SHAPE = "must read (year) + court + type + serial + 号"
RULE_YEAR = "year must be four digits in parentheses"
RULE_FUTURE = "year is in the future"
RULE_COURT = "court code is not in the court code table (法〔2015〕137号 art. 4)"
RULE_COURT_DIGITS = "court code must be a high court's code alone, or with 2 or 4 digits"
RULE_INTERMEDIATE = "intermediate court number is in no range of the table (art. 5)"
RULE_BASIC = "basic court number must be two pairs of digits, neither 00 (art. 5)"
RULE_TYPE = "type code is not an enforcement type code"
RULE_SPECIAL_TRIAL = "special-trial code is dated before it existed (法〔2018〕335号)"
RULE_SERIAL = "serial must be a natural number without leading zeros (art. 10)"
RULE_SERIAL_LONG = "serial is longer than any court's yearly count"
RULE_NEW_FORM_EARLY = "2016-form number is dated before the rule took effect"
RULE_OLD_FORM_LATE = "pre-2016-form number is dated after that form ended"
RULE_OLD_COURT = "pre-2016 court abbreviation must be Chinese characters, within the bound"
RULE_OLD_SERIAL = "serial must be a positive number"


def rule_too_early(table: CaseNumberTable) -> str:
    return f"year is before {table.earliest_year}"


# Full-width digits and parentheses are what a Chinese input method types; every other
# Unicode digit (Arabic-Indic, Devanagari, superscript, circled) is refused, never mapped.
_WIDTH = str.maketrans(
    {**{chr(0xFF10 + i): str(i) for i in range(10)}, "\uff08": "(", "\uff09": ")"}
)
# (year) ... 号 around a body; the year checked on its own so its rule can be named.
_HEAD = re.compile(r"\((?P<year>[^()]*)\)(?P<body>.+)号")
# Chinese characters of the basic plane: every court abbreviation and type code is one.
_HAN = "\u3400-\u4dbf\u4e00-\u9fff"
# Old form: an abbreviation, the type, 字第 and the serial (leading zeros were common).
_OLD = re.compile(rf"(?P<prefix>[{_HAN}]*)字第(?P<serial>[0-9]+)")
# New form after the court code: the special-trial and type characters, then the serial.
_NEW_CODES = re.compile(rf"[{_HAN}]+")


def read_case_number(
    text: str, *, current_year: int, table: CaseNumberTable | None = None
) -> CaseNumber:
    """Read an enforcement case number by the rule of its era, or raise `CaseNumberError`
    naming the rule it breaks. `current_year` bounds the year (a filing cannot be later)."""
    table = table or case_number_table()
    raw = text.strip()
    if any(c.isdigit() and not ("0" <= c <= "9" or "\uff10" <= c <= "\uff19") for c in raw):
        raise CaseNumberError(RULE_DIGITS)
    value = raw.translate(_WIDTH)
    head = _HEAD.fullmatch(value)
    if head is None:
        raise CaseNumberError(RULE_SHAPE)
    if re.fullmatch(r"[0-9]{4}", head["year"]) is None:
        raise CaseNumberError(RULE_YEAR)
    year = int(head["year"])
    if year > current_year:
        raise CaseNumberError(RULE_FUTURE)
    if year < table.earliest_year:
        raise CaseNumberError(rule_too_early(table))
    body = head["body"]
    if "字第" in body:
        return _read_old(body, year, table)
    return _read_new(body, year, table)


def case_number_problem(
    case_number: str, *, current_year: int, table: CaseNumberTable | None = None
) -> str | None:
    """None for a number that keeps its era's rule; otherwise the rule it breaks."""
    try:
        read_case_number(case_number, current_year=current_year, table=table)
    except CaseNumberError as exc:
        return exc.rule
    return None


def _read_old(body: str, year: int, table: CaseNumberTable) -> CaseNumber:
    if year > table.old_form_last_year:
        raise CaseNumberError(RULE_OLD_FORM_LATE)
    m = _OLD.fullmatch(body)
    if m is None:
        raise CaseNumberError(RULE_OLD_COURT)
    prefix = m["prefix"]
    # The longest type the prefix ends with: 执恢 before 执, 民执 before 执.
    kinds = sorted(
        (t for t in table.before_2016.types if prefix.endswith(t)), key=len, reverse=True
    )
    if not kinds:
        raise CaseNumberError(RULE_TYPE)
    court = prefix[: len(prefix) - len(kinds[0])]
    if len(court) > table.before_2016.court_max_chars:
        raise CaseNumberError(RULE_OLD_COURT)
    serial = m["serial"]
    if int(serial) == 0:
        raise CaseNumberError(RULE_OLD_SERIAL)
    if len(serial.lstrip("0")) > table.serial_max_digits:
        raise CaseNumberError(RULE_SERIAL_LONG)
    return CaseNumber(
        era="before_2016",
        year=year,
        court=court,
        level=None,
        court_kind=None,
        special_trial=None,
        type_code=kinds[0],
        serial=int(serial),
    )


def _read_new(body: str, year: int, table: CaseNumberTable) -> CaseNumber:
    courts = table.courts
    level: Level
    kind: str | None
    if body.startswith(courts.supreme):
        court, level, kind, rest = courts.supreme, "supreme", None, body[len(courts.supreme) :]
    elif body[:1] in courts.high:
        rest = body[1:].lstrip("0123456789")  # the digits after the code: none, 2 or 4
        court = body[: len(body) - len(rest)]
        number = court[1:]
        level, kind = _court_level(court, number, table)
    else:
        raise CaseNumberError(RULE_COURT)
    lead = _NEW_CODES.match(rest)
    codes, special = (lead.group() if lead else ""), None
    serial = rest[len(codes) :]
    if codes not in table.enforcement_types:
        if codes[:1] in table.special_trial and codes[1:] in table.enforcement_types:
            special, codes = codes[0], codes[1:]
        else:
            raise CaseNumberError(RULE_TYPE)
    if year < table.in_force_year:
        raise CaseNumberError(RULE_NEW_FORM_EARLY)
    if special is not None and year < table.special_trial[special].from_year:
        raise CaseNumberError(RULE_SPECIAL_TRIAL)
    if re.fullmatch(r"[0-9]+", serial) is None or serial.startswith("0"):
        raise CaseNumberError(RULE_SERIAL)
    if len(serial) > table.serial_max_digits:
        raise CaseNumberError(RULE_SERIAL_LONG)
    return CaseNumber(
        era="2016",
        year=year,
        court=court,
        level=level,
        court_kind=kind,
        special_trial=special,
        type_code=codes,
        serial=int(serial),
    )


def _court_level(court: str, number: str, table: CaseNumberTable) -> tuple[Level, str | None]:
    if not number:
        return "high", None
    if len(number) == 2:
        n = int(number)
        for band in table.courts.intermediate:
            if band.first <= n <= band.last:
                return "intermediate", band.kind
        raise CaseNumberError(RULE_INTERMEDIATE)
    if len(number) == 4:
        if number[:2] == "00" or number[2:] == "00":
            raise CaseNumberError(RULE_BASIC)
        if court in table.courts.basic_kinds:
            return "basic", table.courts.basic_kinds[court]
        return "basic", "railway" if number[:2] == "71" else "ordinary"
    raise CaseNumberError(RULE_COURT_DIGITS)


@cache
def case_number_table() -> CaseNumberTable:
    """`case_numbers.yaml`, parsed once: the table a caller that passes none reads by."""
    return CaseNumberTable.from_yaml(
        read_text("case_numbers.yaml"), source="policies/case_numbers.yaml"
    )
