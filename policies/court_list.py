"""The licensed copy of the dishonest judgment-debtor list: what a row of a vendor's bulk file
must hold, the key each row is found by, and what a candidate found by that key is worth.

Pure: `RowChecker.check` turns one record of a bulk file (the court's field names, as
vendors sell them: `iname`, `cardNum`, `caseCode` ...) into a `ListRow` or raises `RowError`
naming the field and the rule broken, never the value. `verdict` grades a candidate whose
masked key agreed by how its name matched (`court_list.yaml`). `stale` says whether a copy is
too old to screen against.

A row is keyed by its masked ID number's shape and shown characters (`name_match.MaskShape`):
an applicant's full ID number gives one key per shape in the copy, so a lookup is an exact
match on an index, and names are compared only for the few rows a key finds.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from functools import cache, lru_cache
from operator import gt, itemgetter
from typing import Literal, NamedTuple

from pydantic import Field

from policies.case_number import case_number_problem
from policies.document import PolicyDocument
from policies.name_match import MaskShape, Match, masked_key
from policies.shipped import read_text

Verdict = Literal["confirmed", "probable", "possible"]
VERDICTS: tuple[Verdict, ...] = ("confirmed", "probable", "possible")

# The fields of a bulk record, by the court's own names. `delist` is the vendor's flag for
# an entry taken off the list (是否下架); `type` is 0 for a person, 1 for an organisation.
FIELDS = (
    "iname",
    "cardNum",
    "caseCode",
    "courtName",
    "areaName",
    "gistId",
    "gistUnit",
    "duty",
    "performance",
    "performedPart",
    "unperformPart",
    "disruptTypeName",
    "regDate",
    "publishDate",
    "type",
    "delist",
)
# What every listed row carries; a delisting needs only what names the entry.
REQUIRED = (
    "iname",
    "cardNum",
    "caseCode",
    "courtName",
    "areaName",
    "regDate",
    "publishDate",
    "type",
)
IDENTITY = ("iname", "cardNum", "caseCode")
OPTIONAL = tuple(f for f in FIELDS if f not in REQUIRED)
_REQUIRED_AT = tuple((i, f) for i, f in enumerate(FIELDS) if f in REQUIRED)
_IDENTITY_AT = tuple((i, f) for i, f in enumerate(FIELDS) if f in IDENTITY)

RULE_MISSING = "is required"
RULE_TOO_LONG = "is longer than the policy allows"
RULE_CONTROL = "holds a control character"
RULE_TYPE = "must be 0 (a person) or 1 (an organisation)"
RULE_DELIST = "must be 0 or 1 (true/false, 是/否)"
RULE_MASK = "must be a masked resident ID number as the public list prints it (e.g. 4+4 shown)"
RULE_PROVINCE = "shown prefix must start with a province code"
RULE_ORG = "must be an organisation code (digits, capital letters, '-' or '*')"
RULE_DATE = "must be a date YYYY-MM-DD (or YYYY年MM月DD日)"
RULE_DATE_FUTURE = "date is in the future"
RULE_DATE_EARLY = "date is before the policy's earliest year"
RULE_DATE_ORDER = "publication is before the filing (regDate)"
RULE_PERFORMANCE = "is not a performance value the policy lists"

# Province-level codes (GB/T 2260 first two digits): 11-15 North, 21-23 North-east, 31-37
# East, 41-46 Central-South, 50-54 South-west, 61-65 North-west, 71 Taiwan, 81/82 Hong Kong
# and Macao (residence permits), 83 residence permits of Taiwan residents, 91 foreign
# permanent residents (the 2023 card).
PROVINCES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 "
    "64 65 71 81 82 83 91".split()
)
# An organisation's code as lists print it: a unified social credit code (18) or an older
# organisation code (9, often written with a dash), sometimes masked.
_ORG = re.compile(r"[0-9A-Z*\-]{8,20}")
# ISO dates, optionally with a time the vendor appended; and the court site's own form.
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[ T][0-9:.]+)?")
_CN_DATE = re.compile(r"(\d{4})年(\d{1,2})月(\d{1,2})日")
# C0 and C1 controls, and the line and paragraph separators: never part of a field.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
# The serial at the end of a case number: its value never changes the verdict, only its
# length and leading zeros do (policies.case_number), so verdicts are cached without it.
_SERIAL = re.compile(r"(.*?)([0-9]+)号")


class CourtListPolicy(PolicyDocument):
    """`court_list.yaml`."""

    version: str = Field(min_length=1, max_length=64)
    max_age_hours: int = Field(ge=1, le=24 * 90)
    verdicts: dict[Match, Verdict]
    confirmed_min_shown: int = Field(ge=1, le=18)
    performance: tuple[str, ...] = Field(min_length=1)
    max_chars: dict[str, int]
    earliest_year: int = Field(ge=1949, le=2100)

    def stale(self, as_of: datetime, now: datetime) -> bool:
        """Is a copy whose data is as of `as_of` too old to screen against at `now`?"""
        return now - as_of > timedelta(hours=self.max_age_hours)


@cache
def court_list_policy() -> CourtListPolicy:
    """The shipped `court_list.yaml`, parsed once."""
    return CourtListPolicy.from_yaml(
        read_text("court_list.yaml"), source="policies/court_list.yaml"
    )


class RowError(ValueError):
    """A row that breaks a rule: the field and the rule, never the value."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class ListRow(NamedTuple):
    """One entry of the list, checked. `entry_key` names the entry across versions (its case
    number, ID and name); `match_key` is what an applicant's ID number is looked up by (a
    person's only: None for an organisation); `shape` its mask shape's label."""

    entry_key: str
    person: bool
    delisted: bool
    match_key: str | None
    shape: str | None
    iname: str
    card_num: str
    case_code: str
    court_name: str
    area_name: str
    gist_id: str
    gist_unit: str
    duty: str
    performance: str
    performed_part: str
    unperform_part: str
    disrupt_type_name: str
    reg_date: date | None
    publish_date: date | None


def entry_key(case_code: str, card_num: str, iname: str) -> str:
    """The entry's name across versions and vendors: SHA-256 of its case number, ID and name
    as normalised, 128 bits in hex."""
    text = "\x1f".join((case_code, card_num, iname))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _text(value: object) -> str:
    """A field as text, NFKC-normalised (full-width digits, letters, asterisks, brackets):
    for the fields rules read (ID, case number, dates, flags)."""
    if type(value) is str:
        # ASCII needs no normalising.
        return value.strip() if value.isascii() else unicodedata.normalize("NFKC", value).strip()
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return unicodedata.normalize("NFKC", str(value)).strip()


def _free(value: object) -> str:
    """A free-text field as text (names are normalised where they are compared)."""
    return value.strip() if type(value) is str else _text(value)


# The fields the rules read, normalised; the rest are kept as given (stripped).
_NORMALISED = frozenset({"cardNum", "caseCode", "regDate", "publishDate", "type", "delist"})
_READERS = tuple(_text if f in _NORMALISED else _free for f in FIELDS)
_ALL = itemgetter(*FIELDS)
_RULED_AT = tuple(i for i, f in enumerate(FIELDS) if f in _NORMALISED)
_required = itemgetter(*(i for i, _ in _REQUIRED_AT))
_identity = itemgetter(*(i for i, _ in _IDENTITY_AT))


def _texts(record: Mapping[str, object]) -> list[str]:
    """Every field as text. A record of strings (what a JSON or CSV line gives) takes the
    fast way: stripped in one comprehension, the fields the rules read normalised only when
    they are not ASCII; anything else field by field."""
    try:
        values = _ALL(record)
        texts = [v.strip() for v in values]
    except (KeyError, AttributeError, TypeError):
        get = record.get
        return [read(get(f)) for read, f in zip(_READERS, FIELDS, strict=True)]
    for i in _RULED_AT:
        if not texts[i].isascii():
            texts[i] = unicodedata.normalize("NFKC", texts[i]).strip()
    return texts


class RowChecker:
    """Checks the rows of one file against the policy, as of `today` (dates and case-number
    years may not be later). Caches what repeats across rows (case-number verdicts without
    their serial, dates)."""

    def __init__(self, policy: CourtListPolicy, *, today: date) -> None:
        self.policy = policy
        self.today = today
        self._performance = frozenset(policy.performance)
        self._limits = tuple(policy.max_chars.get(f, 64) for f in FIELDS)
        self._case = lru_cache(maxsize=1 << 18)(self._case_problem)
        self._date = lru_cache(maxsize=1 << 16)(self._read_date)

    def _case_problem(self, head: str, digits: int, significant: int) -> str | None:
        # A serial of the same length and leading zeros as the real one.
        serial = "0" * (digits - significant) + "1" * significant
        return case_number_problem(f"{head}{serial}号", current_year=self.today.year)

    def case_problem(self, case_code: str) -> str | None:
        """The rule a case number breaks (`policies.case_number`), or None."""
        m = _SERIAL.fullmatch(case_code)
        if m is None:
            return case_number_problem(case_code, current_year=self.today.year)
        serial = m.group(2)
        return self._case(m.group(1), len(serial), len(serial.lstrip("0")))

    def _read_date(self, text: str) -> date | str:
        m = _ISO_DATE.fullmatch(text) or _CN_DATE.fullmatch(text)
        if m is None:
            return RULE_DATE
        try:
            value = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            return RULE_DATE
        if value > self.today:
            return RULE_DATE_FUTURE
        if value.year < self.policy.earliest_year:
            return RULE_DATE_EARLY
        return value

    def _when(self, field: str, text: str) -> date | None:
        if not text:
            return None
        found = self._date(text)
        if isinstance(found, str):
            raise RowError(field, found)
        return found

    def check(self, record: Mapping[str, object]) -> ListRow:
        """One record as a `ListRow`, or `RowError` for the first rule it breaks."""
        texts = _texts(record)
        # Lengths against their limits in one pass (C loops); the field named only when one
        # is over.
        if any(map(gt, map(len, texts), self._limits)):
            for f, v, limit in zip(FIELDS, texts, self._limits, strict=True):
                if len(v) > limit:
                    raise RowError(f, RULE_TOO_LONG)
        # One search over every field (joined by a tab, which is allowed); the field is
        # looked for only when there is something to name.
        if _CONTROL.search("\t".join(texts)):
            for f, v in zip(FIELDS, texts, strict=True):
                if _CONTROL.search(v):
                    raise RowError(f, RULE_CONTROL)
        (
            name,
            card,
            case_code,
            court_name,
            area_name,
            gist_id,
            gist_unit,
            duty,
            performance,
            performed_part,
            unperform_part,
            disrupt,
            reg_text,
            publish_text,
            kind,
            delist,
        ) = texts
        delist = delist.lower()
        if delist in ("", "0", "false", "否", "no"):
            delisted = False
        elif delist in ("1", "true", "是", "yes"):
            delisted = True
        else:
            raise RowError("delist", RULE_DELIST)
        if not all(_identity(texts) if delisted else _required(texts)):
            for i, f in _IDENTITY_AT if delisted else _REQUIRED_AT:
                if not texts[i]:
                    raise RowError(f, RULE_MISSING)
        if kind not in ("0", "1", "") or (not kind and not delisted):
            raise RowError("type", RULE_TYPE)
        card = card.upper()
        person = kind != "1"
        match_key: str | None = None
        shape: MaskShape | None = None
        if person:
            found = masked_key(card)
            if found is None:
                raise RowError("cardNum", RULE_MASK)
            shape, match_key = found
            if card[:2] not in PROVINCES:
                raise RowError("cardNum", RULE_PROVINCE)
        elif not _ORG.fullmatch(card):
            raise RowError("cardNum", RULE_ORG)
        problem = self.case_problem(case_code)
        if problem is not None:
            raise RowError("caseCode", problem)
        if performance and performance not in self._performance:
            raise RowError("performance", RULE_PERFORMANCE)
        reg = self._when("regDate", reg_text)
        published = self._when("publishDate", publish_text)
        if reg is not None and published is not None and published < reg:
            raise RowError("publishDate", RULE_DATE_ORDER)
        return ListRow(
            entry_key(case_code, card, name),
            person,
            delisted,
            match_key,
            shape.label if shape else None,
            name,
            card,
            case_code,
            court_name,
            area_name,
            gist_id,
            gist_unit,
            duty,
            performance,
            performed_part,
            unperform_part,
            disrupt,
            reg,
            published,
        )


def shape_of(label: str) -> MaskShape:
    """A mask shape from its label (`4+4/18`)."""
    m = re.fullmatch(r"(\d{1,2})\+(\d{1,2})/(\d{2})", label)
    if m is None:
        raise ValueError("shape: must be prefix+suffix/length")
    return MaskShape(int(m.group(1)), int(m.group(2)), int(m.group(3)))


def verdict(policy: CourtListPolicy, shape: MaskShape, name: Match | None) -> Verdict | None:
    """What a row found by an applicant's key is worth, given how the names matched: None
    when they did not (another person sharing the masked key)."""
    if name is None:
        return None
    found = policy.verdicts.get(name)
    if found == "confirmed" and shape.shown < policy.confirmed_min_shown:
        return "probable"
    return found
