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
