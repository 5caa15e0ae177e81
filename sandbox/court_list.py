"""A synthetic bulk copy of the dishonest judgment-debtor list, and deltas to it, as licensed
data vendors sell them: one record per entry with the court's field names (`iname`,
`cardNum` masked, `caseCode`, `courtName`, `areaName`, `gistId`, `gistUnit`, `duty`,
`performance`, `performedPart`, `unperformPart`, `disruptTypeName`, `regDate`,
`publishDate`, `type`, `delist`), in JSON Lines or CSV.

Every row is a pure function of the spec's seed and its index (`BulkList.row`), so a delta can
delist rows of its base without reading it back, and a file of 10M rows streams out in
constant memory. The knobs: size, mask shapes, the share of names in traditional characters
and of minority names, of organisations; a delta's new and delisted shares. Planted entries
(`Planted`) name known people, so tests and benchmarks know the truth: an entry in the
person's name (`exact`), in traditional characters (`traditional`), a homophone of it
(`homophone`), or another person's name on the same masked key (`other`), each under its
own case number.

Fictional people only: ID numbers are generated with a valid check character.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

import orjson

from sandbox.population import _TRADITIONAL, CONDUCTS, COURTS, PERFORMANCE, masked

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
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡"
    "余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯"
    "龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤单仇查翟"
)
GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超霞平刚英华玉兰桂秀文建国红云海燕波宁斌辉亮飞鹏"
    "浩宇欣怡晨雪琳子涵轩梓睿博天佳嘉婷晓小志永春东晶丹俊峰鑫凯瑶"
)
# Given-name characters and one homophone each (same toneless reading, another character).
HOMOPHONES = {
    "小": "晓",
    "明": "铭",
    "伟": "炜",
    "丽": "莉",
    "华": "桦",
    "军": "君",
    "杰": "洁",
    "芳": "方",
    "敏": "珉",
    "静": "靖",
    "红": "虹",
    "燕": "艳",
    "宇": "雨",
    "海": "亥",
    "波": "玻",
}
MINORITY = ("阿依古丽·买买提", "热依拉·艾力", "迪丽娜尔·阿不都", "买买提·艾力", "古丽·吐尔逊")
ORGANISATION_SUFFIX = ("有限公司", "贸易有限公司", "建筑工程有限公司", "科技有限公司")
PROVINCES = (
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 64 65"
).split()
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"  # GB 11643-1999: (sum of weighted digits) % 11 indexes this

Kind = Literal["exact", "traditional", "homophone", "other"]


def check_character(body: str) -> str:
    return _CHECK[sum(int(c) * w for c, w in zip(body, _WEIGHTS, strict=True)) % 11]


def id_number(h: bytes) -> str:
    """A fictional resident ID number from digest bytes: a plausible division code (province,
    city 01-40, county 01-20), a birth date from 1950 to 2004, a sequence and its check."""
    region = f"{PROVINCES[h[0] % len(PROVINCES)]}{1 + h[1] % 40:02d}{1 + h[2] % 20:02d}"
    born = date(1950, 1, 1).toordinal() + int.from_bytes(h[3:5], "big") % (365 * 55)
    seq = 1 + int.from_bytes(h[5:7], "big") % 999
    body = f"{region}{date.fromordinal(born):%Y%m%d}{seq:03d}"
    return body + check_character(body)


def person_name(h: bytes) -> str:
    """A fictional name from digest bytes: a surname and one or two given characters."""
    given = GIVEN[h[8] % len(GIVEN)] + (GIVEN[h[9] % len(GIVEN)] if h[10] % 3 else "")
    return SURNAMES[h[7] % len(SURNAMES)] + given


def homophone(name: str) -> str | None:
    """The name with its first given character that has a homophone replaced, or None."""
    for i, ch in enumerate(name[1:], 1):
        if ch in HOMOPHONES:
            return name[:i] + HOMOPHONES[ch] + name[i + 1 :]
    return None


@dataclass(frozen=True)
class Planted:
    """An entry planted for a known person: `kind` says how its name relates to theirs."""

    name: str
    id_number: str
    kind: Kind = "exact"


@dataclass
class Truth:
    """What the file holds for the planted people: per planted entry its case number, the
    person's ID number and kind; and the case numbers a delta delisted."""

    planted: list[tuple[str, str, Kind]] = field(default_factory=list)  # (case, id, kind)
    delisted: list[str] = field(default_factory=list)  # case numbers


@dataclass
class BulkList:
    """A full copy's spec: `rows` entries, each a pure function of `seed` and its index."""

    rows: int
    seed: int = 1
    shapes: tuple[tuple[int, int], ...] = ((4, 4),)
    traditional: float = 0.01
    minority: float = 0.01
    organisations: float = 0.03
    year: int = 2026
    planted: tuple[Planted, ...] = ()
    # Planted entries take case numbers from this serial up (no generated row uses them).
    planted_serial: int = 900_000

    def _h(self, i: int) -> bytes:
        return hashlib.blake2b(f"{self.seed}:{i}".encode(), digest_size=24).digest()

    def _case(self, i: int, serial: int | None = None) -> tuple[str, str, str, int]:
        court, code, area = COURTS[i % len(COURTS)]
        year = 2016 + (i // len(COURTS)) % (self.year - 2016)
        n = serial if serial is not None else 1 + i // (len(COURTS) * (self.year - 2016))
        return f"({year}){code}执{n}号", court, area, year

    def row(self, i: int) -> dict[str, str]:
        """Entry `i` of the copy."""
        h = self._h(i)
        case, court, area, year = self._case(i)
        share = h[11] / 256
        if share < self.organisations:
            name = "某" + GIVEN[h[8] % len(GIVEN)] + ORGANISATION_SUFFIX[h[9] % 4]
            card, kind = f"91{h.hex()[:16].upper()}", "1"
        else:
            number = id_number(h)
            prefix, suffix = self.shapes[h[12] % len(self.shapes)]
            card, kind = masked(number, prefix, suffix), "0"
            pick = h[13] / 256
            if pick < self.minority:
                name = MINORITY[h[14] % len(MINORITY)]
            else:
                name = person_name(h)
                if pick < self.minority + self.traditional:
                    name = name.translate(_TRADITIONAL)
        return _record(name, card, case, court, area, year, h, kind)

    def planted_rows(self) -> Iterator[tuple[dict[str, str], Planted]]:
        """The planted entries, one per planted person, each under a case number of its own."""
        for j, p in enumerate(self.planted):
            i = self.rows + j
            h = self._h(i)
            case, court, area, year = self._case(i, serial=self.planted_serial + j)
            prefix, suffix = self.shapes[h[12] % len(self.shapes)]
            name = {
                "exact": p.name,
                "traditional": p.name.translate(_TRADITIONAL),
                "homophone": homophone(p.name) or p.name,
                "other": "诸葛" + p.name[-1] + "亮",
            }[p.kind]
            card = masked(p.id_number, prefix, suffix)
            yield _record(name, card, case, court, area, year, h, "0"), p

    def records(self) -> Iterator[dict[str, str]]:
        for i in range(self.rows):
            yield self.row(i)
        for record, _ in self.planted_rows():
            yield record

    def truth(self) -> Truth:
        t = Truth()
        for record, p in self.planted_rows():
            t.planted.append((record["caseCode"], p.id_number, p.kind))
        return t


def _record(
    name: str, card: str, case: str, court: str, area: str, year: int, h: bytes, kind: str
) -> dict[str, str]:
    month, day = 1 + h[15] % 12, 1 + h[16] % 28
    amount = 1000 * (5 + h[17] % 200)
    partly = h[18] % 4 == 0
    return {
        "iname": name,
        "cardNum": card,
        "caseCode": case,
        "courtName": court,
        "areaName": area,
        "gistId": f"({year - 1}){case[6:].split('执')[0]}民初{1000 + h[19] * 7}号",
        "gistUnit": court,
        "duty": f"被执行人于判决生效之日起十日内偿还借款本金人民币{amount}元及利息",
        "performance": PERFORMANCE[1 if partly else 0],
        "performedPart": f"{amount // 4}" if partly else "",
        "unperformPart": f"{amount - amount // 4}" if partly else f"{amount}",
        "disruptTypeName": CONDUCTS[h[20] % len(CONDUCTS)],
        "regDate": f"{year}-{month:02d}-{day:02d}",
        "publishDate": f"{year}-{month:02d}-{min(day + 14, 28):02d}",
        "type": kind,
        "delist": "0",
    }


@dataclass
class Delta:
    """A delta to `base`: `new` fresh entries (indexes past the base's), the base rows whose
    index is in `delist` taken off, and planted entries listed or delisted by case number."""

    base: BulkList
    new: int = 0
    delist: tuple[int, ...] = ()
    planted: tuple[Planted, ...] = ()
    delist_planted: tuple[int, ...] = ()  # positions in `base.planted`
    offset: int = 10_000_000  # new entries' indexes start here (past any base)

    def records(self) -> Iterator[dict[str, str]]:
        for k in range(self.new):
            yield self.base.row(self.offset + k)
        extra = BulkList(
            rows=self.offset + self.new,
            seed=self.base.seed,
            shapes=self.base.shapes,
            year=self.base.year,
            planted=self.planted,
            planted_serial=self.base.planted_serial + len(self.base.planted) + 1000,
        )
        for record, _ in extra.planted_rows():
            yield record
        for i in self.delist:
            yield _delisting(self.base.row(i))
        planted = list(self.base.planted_rows())
        for j in self.delist_planted:
            yield _delisting(planted[j][0])

    def truth(self) -> Truth:
        extra = BulkList(
            rows=self.offset + self.new,
            seed=self.base.seed,
            shapes=self.base.shapes,
            year=self.base.year,
            planted=self.planted,
            planted_serial=self.base.planted_serial + len(self.base.planted) + 1000,
        )
        t = extra.truth()
        planted = list(self.base.planted_rows())
        t.delisted = [self.base.row(i)["caseCode"] for i in self.delist] + [
            planted[j][0]["caseCode"] for j in self.delist_planted
        ]
        return t


def _delisting(record: dict[str, str]) -> dict[str, str]:
    """A delta's delisting: what names the entry, the flag set."""
    out = dict.fromkeys(FIELDS, "")
    out.update(
        iname=record["iname"], cardNum=record["cardNum"], caseCode=record["caseCode"], delist="1"
    )
    return out


def write(records: Iterable[dict[str, str]], path: Path) -> int:
    """Write records as JSON Lines or CSV (by the file's suffix); returns how many."""
    n = 0
    if path.suffix == ".csv":
        with path.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(FIELDS)
            for r in records:
                writer.writerow([r[f] for f in FIELDS])
                n += 1
        return n
    with path.open("wb", buffering=1 << 20) as out:
        for r in records:
            out.write(orjson.dumps(r))
            out.write(b"\n")
            n += 1
    return n
