"""Matching a person's name against a name from another source (a court list, a bureau) that
may spell it in traditional characters, with another middle dot, in Latin letters (either
order, the surname read as a surname), or only alike in sound; and an ID number against the
masked form a public list prints.

How strong each kind of name match is (`STRENGTH`), strongest first:

- `exact`: the same after width, case and separators (spaces, middle dots) are normalised;
- `script`: the same characters once traditional ones are simplified (OpenCC t2s);
- `romanised`: one side in Latin letters spells the other's characters, surname first or
  given name first, the surname read with its surname reading (`name_readings.yaml`: 曾 zeng,
  单 shan, 仇 qiu, 查 zha ...), every other character with any of its readings;
- `homophone`: other characters read alike (王小明 / 王晓明): a *different person* unless
  something else (the full ID number) says otherwise. Callers keep it below every bar that a
  romanised or a written match clears (`policies.court_list`: never more than `possible`).

Everything is cached per name and per character: a whole-book re-screen compares millions
of candidate pairs, most of them names seen before.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Literal, NamedTuple

import yaml

from policies.shipped import read_text

# Names are compared character by character: pypinyin's phrase dictionary (about 45 MB
# resident in every worker) would only change readings inside multi-character words, the
# same way on both sides. Its documented switch must be set before the import, which is
# made when a name is first compared (pypinyin and opencc take a fifth of a second to load:
# every command opens the store, which reaches this module, and most compare no name).
os.environ.setdefault("PYPINYIN_NO_PHRASES", "true")
os.environ.setdefault("PYPINYIN_NO_DICT_COPY", "true")

if TYPE_CHECKING:
    import opencc

Match = Literal["exact", "script", "romanised", "homophone"]
# Higher is stronger; callers map these to their own levels.
STRENGTH: Mapping[Match, int] = {"exact": 4, "script": 3, "romanised": 2, "homophone": 1}

# Every character typed for the minority-name middle dot, hyphens, full stops and spaces:
# the places a name may be cut into parts; dropped for matching.
_SEPARATORS = re.compile(r"[\s\u00b7\u30fb\u2022\uff0e.\u2024\u2027\u2219\uff65\u0387\-'’]+")
# CJK ideographs of every block (BMP, compatibility, Extensions B-I up to U+323AF): a name
# written in characters. Characters outside the BMP are whole code points in Python strings.
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U000323af]+")
# The middle dot of a minority name and what is typed for it: where its parts meet.
_DOTS = re.compile(r"[\u00b7\u30fb\u2022\uff0e.\u2024\u2027\u2219\uff65\u0387]+")
# A romanised name after accents are taken off: ASCII letters only.
_LATIN = re.compile(r"[a-z]+")


class Readings(NamedTuple):
    """The surname table (`name_readings.yaml`): each surname's readings, usual one first."""

    single: Mapping[str, tuple[str, ...]]
    compound: Mapping[str, tuple[tuple[str, ...], ...]]


@cache
def readings() -> Readings:
    """The shipped surname table, read once."""
    doc = yaml.safe_load(read_text("name_readings.yaml"))
    single = {k: tuple(v) for k, v in doc["single"].items()}
    compound = {k: tuple((r,) for r in v) for k, v in doc["compound"].items()}
    for name, rs in compound.items():
        if len(name) != 2 or len(rs) != 2:
            raise ValueError(f"name_readings.yaml: compound.{name}: two characters, two readings")
    return Readings(single, compound)


@cache
def _t2s() -> opencc.OpenCC:
    import opencc

    return opencc.OpenCC("t2s")


@lru_cache(maxsize=1 << 16)
def _char_readings(ch: str) -> tuple[str, ...]:
    """Every toneless reading of one character, as a word (ü as v, and its spellings)."""
    from pypinyin import Style, pinyin

    found = pinyin(ch, style=Style.NORMAL, heteronym=True)[0]
    return _spellings(found)


@lru_cache(maxsize=1 << 16)
def _char_primary(ch: str) -> str:
    from pypinyin import lazy_pinyin

    return str(lazy_pinyin(ch)[0])


def _spellings(rs: Iterable[str]) -> tuple[str, ...]:
    # ü is written v by pypinyin, u on most documents, yu on passports (吕 LYU).
    out: list[str] = []
    for r in rs:
        for s in (r, r.replace("v", "u"), r.replace("v", "yu")) if "v" in r else (r,):
            if s not in out:
                out.append(s)
    return tuple(out)


class Form(NamedTuple):
    """A name prepared once for comparison. `han`: written in characters (then `chars` are
    simplified, `parts` cut at middle dots, `readings` per character with the surname's own
    at the head, `primary` one reading each); `latin`: in Latin letters (`parts` are its
    words)."""

    plain: str
    simple: str
    han: bool
    latin: bool
    parts: tuple[str, ...]
    readings: tuple[tuple[str, ...], ...]
    primary: tuple[str, ...]
    surname: int  # characters of the surname at the head (0: not known, a dotted name)


def _deaccent(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@lru_cache(maxsize=1 << 18)
def form(name: str) -> Form:
    """`name` prepared for comparison (cached)."""
    normal = unicodedata.normalize("NFKC", name).strip().lower()
    pieces = tuple(p for p in _SEPARATORS.split(normal) if p)
    plain = "".join(pieces)
    if plain and _HAN.fullmatch(plain):
        dots = (p for p in _DOTS.split(normal) if p)
        simple_pieces = tuple(_t2s().convert(_SEPARATORS.sub("", p)) for p in dots)
        simple = "".join(simple_pieces)
        table = readings()
        dotted = len(simple_pieces) > 1
        surname = 0
        head: tuple[tuple[str, ...], ...] = ()
        if not dotted and len(simple) >= 3 and simple[:2] in table.compound:
            surname, head = 2, table.compound[simple[:2]]
        elif not dotted and len(simple) >= 2:
            surname = 1
            head = (table.single[simple[0]],) if simple[0] in table.single else ()
        rest = simple[len(head) :]
        per_char = tuple(_spellings(h) for h in head) + tuple(_char_readings(c) for c in rest)
        primary = tuple(h[0] for h in head) + tuple(_char_primary(c) for c in rest)
        return Form(plain, simple, True, False, simple_pieces, per_char, primary, surname)
    letters = _deaccent(plain)
    if letters and _LATIN.fullmatch(letters):
        words = tuple(_deaccent(p) for p in pieces)
        return Form(letters, letters, False, True, words, (), (), 0)
    return Form(plain, plain, False, False, pieces, (), (), 0)


def _fits(letters: str, per_char: Iterable[tuple[str, ...]]) -> bool:
    """Do the letters spell the characters in turn, one reading each?"""
    at = {0}
    for options in per_char:
        at = {p + len(r) for p in at for r in options if letters.startswith(r, p)}
        if not at:
            return False
    return len(letters) in at


def _orders(han: Form) -> Iterable[tuple[tuple[str, ...], ...]]:
    """The orders a romanised name may give the characters in: as written, and the given
    name (or, for a dotted name, the parts) the other way round."""
    yield han.readings
    if han.surname:
        yield han.readings[han.surname :] + han.readings[: han.surname]
    elif len(han.parts) > 1:
        cut, at = [], 0
        for part in han.parts:
            cut.append(han.readings[at : at + len(part)])
            at += len(part)
        yield tuple(r for part in reversed(cut) for r in part)


def _spells(han: Form, latin: Form) -> bool:
    return any(_fits(latin.plain, order) for order in _orders(han))


def compare(a: Form, b: Form) -> Match | None:
    """How two prepared names match (see the module docstring), or None."""
    if not a.plain or not b.plain:
        return None
    if a.plain == b.plain:
        return "exact"
    if a.han and b.han:
        if a.simple == b.simple:
            return "script"
        if len(a.simple) == len(b.simple) and a.primary == b.primary:
            return "homophone"
        return None
    if a.latin and b.latin:
        # The same words in another order ("WANG Xiaoming" / "Xiaoming Wang").
        return "romanised" if sorted(a.parts) == sorted(b.parts) else None
    if a.han and b.latin:
        return "romanised" if _spells(a, b) else None
    if a.latin and b.han:
        return "romanised" if _spells(b, a) else None
    return None


def match_names(ours: str, theirs: str) -> Match | None:
    """How two names match: `exact`, `script`, `romanised`, `homophone` (module docstring),
    or None."""
    return compare(form(ours), form(theirs))


# --- masked ID numbers ------------------------------------------------------------------------


class MaskShape(NamedTuple):
    """Which characters of an ID number a masked form shows: the first `prefix`, the last
    `suffix`, of `length` in all (`1101**********1137`: 4, 4, 18)."""

    prefix: int
    suffix: int
    length: int

    @property
    def label(self) -> str:
        return f"{self.prefix}+{self.suffix}/{self.length}"

    @property
    def shown(self) -> int:
        return self.prefix + self.suffix

    def key(self, id_number: str) -> str:
        """The characters of a full ID number this shape shows, with the shape: equal for an
        ID number and a masked form of it, so a dictionary or an index finds candidates."""
        tail = id_number[len(id_number) - self.suffix :] if self.suffix else ""
        return f"{self.prefix}.{self.suffix}.{self.length}:{id_number[: self.prefix]}{tail}"


# A masked ID: a visible prefix of digits (2-10), at least four masked characters, a visible
# suffix of 1-4 characters (digits; the last may be the check character X). Public lists mask
# with asterisks; full-width ones are NFKC-normalised to them first.
_MASKED = re.compile(r"(\d{2,10})(\*{4,16})(\d{0,3}[\dX])")
# Resident ID numbers are 18 characters; a first-generation one 15 (no check character).
ID_LENGTHS = (15, 18)


def masked_key(masked: str) -> tuple[MaskShape, str] | None:
    """The shape of a masked ID and its key (`MaskShape.key`), or None if it is not one."""
    text = masked if masked.isascii() else unicodedata.normalize("NFKC", masked)
    text = text.strip().upper()
    if len(text) not in ID_LENGTHS:
        return None
    m = _MASKED.fullmatch(text)
    if m is None:
        return None
    head, tail = m.group(1), m.group(3)
    if len(text) == 15 and "X" in tail:
        return None  # a first-generation number has no check character
    shape = _shape(len(head), len(tail), len(text))
    return shape, f"{shape.prefix}.{shape.suffix}.{shape.length}:{head}{tail}"


@lru_cache(maxsize=256)
def _shape(prefix: int, suffix: int, length: int) -> MaskShape:
    return MaskShape(prefix, suffix, length)


def mask_shape(masked: str) -> MaskShape | None:
    """The shape of a masked ID, or None if it is not one."""
    found = masked_key(masked)
    return found[0] if found else None


def masked_id_matches(id_number: str, masked: str) -> bool:
    """True if a fully known ID agrees with a masked one on every shown character and length."""
    found = masked_key(masked)
    if found is None:
        return False
    shape, key = found
    number = unicodedata.normalize("NFKC", id_number).strip().upper()
    return len(number) == shape.length and shape.key(number) == key
