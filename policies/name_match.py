"""Matching a person's name against a name from another source (a court list, a bureau) that
may spell it in traditional characters, with another middle dot, or only alike in pinyin."""

from __future__ import annotations

import os
import re
import unicodedata
from functools import cache
from typing import Literal

import opencc

# Names are compared character by character: pypinyin's phrase dictionary (about 45 MB
# resident in every worker) would only change readings inside multi-character words, the
# same way on both sides. Its documented switch must be set before the import.
os.environ.setdefault("PYPINYIN_NO_PHRASES", "true")
os.environ.setdefault("PYPINYIN_NO_DICT_COPY", "true")
from pypinyin import lazy_pinyin  # noqa: E402

Match = Literal["exact", "script", "pinyin"]

# Every character typed for the minority-name middle dot, and spaces: dropped for matching.
_SEPARATORS = re.compile(r"[\s\u00b7\u30fb\u2022\uff0e.\u2024\u2027\u2219\uff65\u0387-]+")


@cache
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


def _plain(name: str) -> str:
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", name)).lower()


def match_names(ours: str, theirs: str) -> Match | None:
    """How two names match: `exact` (same after normalising separators and width),
    `script` (same once traditional characters are simplified), `pinyin` (same syllables,
    tones ignored: a homophone or a romanised spelling), or None."""
    a, b = _plain(ours), _plain(theirs)
    if not a or not b:
        return None
    if a == b:
        return "exact"
    sa, sb = _t2s().convert(a), _t2s().convert(b)
    if sa == sb:
        return "script"
    pa, pb = "".join(lazy_pinyin(sa)), "".join(lazy_pinyin(sb))
    if len(sa) == len(sb) and pa == pb:
        return "pinyin"
    # A romanised name from the other source against ours in characters.
    if pb == pa and not re.search(r"[\u3400-\u9fff]", sb):
        return "pinyin"
    return None


# Masked IDs on the public list keep a prefix and a suffix: "1101**********002X".
_MASKED = re.compile(r"^(\d{2,10})\*{4,16}(\d{1,4}[\dX]?)$")


def masked_id_matches(id_number: str, masked: str) -> bool:
    """True if a fully known ID agrees with a masked one on every shown character and length."""
    m = _MASKED.fullmatch(masked.strip().upper())
    if m is None or len(masked.strip()) != len(id_number):
        return False
    return id_number.startswith(m.group(1)) and id_number.endswith(m.group(2))


# (2023)京0105执1234号: year in half- or full-width parentheses, a province abbreviation,
# a 4-digit court code, the case type (执 enforcement, 执恢 resumed, 执保 preservation,
# 执异 objection), a sequence and 号.
_CASE = re.compile(
    r"^[(（](?P<year>\d{4})[)）](?P<province>[京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼])"
    r"(?P<court>\d{4})(?P<kind>执恢|执保|执异|执)(?P<seq>\d{1,6})号$")


def case_number_problem(case_number: str, *, current_year: int) -> str | None:
    """None for a well-formed case number; otherwise why it is suspect."""
    m = _CASE.fullmatch(unicodedata.normalize("NFC", case_number.strip()))
    if m is None:
        return "malformed"
    year = int(m.group("year"))
    if year > current_year:
        return "future_year"
    if year < 1990:
        return "implausible_year"
    return None
