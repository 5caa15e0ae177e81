"""Deterministic synthetic answers, derived from the input, so tests can predict them."""

from __future__ import annotations

import hashlib
import unicodedata
from datetime import UTC, date, datetime, timedelta
from typing import Literal

Result = Literal["MATCH", "MISMATCH", "NO_RECORD"]


def normalize_id(id_number: str) -> str:
    return "".join(unicodedata.normalize("NFKC", id_number).split()).upper()


def three_element_result(name: str, id_number: str, phone: str | None = None) -> Result:
    """The identity source's answer: by the first byte of SHA-256 of the ID number, mod 20:
    0 -> NO_RECORD (5%), 1 or 2 -> MISMATCH (10%), anything else -> MATCH (85%).
    Name and phone do not change it, so a test can predict from the ID number alone."""
    del name, phone
    bucket = hashlib.sha256(normalize_id(id_number).encode("utf-8")).digest()[0] % 20
    if bucket == 0:
        return "NO_RECORD"
    if bucket in (1, 2):
        return "MISMATCH"
    return "MATCH"


def as_of_for(endpoint: str, today: date | None = None) -> date:
    """The data's as-of date: identity and carrier checks are real time; the credit bureau
    is T+1."""
    today = today or datetime.now(UTC).date()
    return today - timedelta(days=1) if "credit" in endpoint else today


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()


def carrier_result(name: str, id_number: str, phone: str) -> dict[str, str]:
    """The carrier's three-element answer, from SHA-256 of the phone number:
    byte0 % 20 == 0 -> NO_RECORD, 1 -> MISMATCH, else MATCH; number status by byte1 % 20
    (0 cancelled, 1 suspended, else active); tenure band by byte2 % 3."""
    del name, id_number
    d = _digest("carrier", phone.removeprefix("+86"))
    bucket = d[0] % 20
    result = "NO_RECORD" if bucket == 0 else "MISMATCH" if bucket == 1 else "MATCH"
    status = {0: "cancelled", 1: "suspended"}.get(d[1] % 20, "active")
    tenure = ("lt_6m", "6m_24m", "gt_24m")[d[2] % 3]
    return {"result": result, "number_status": status, "tenure_band": tenure}


def credit_summary(name: str, id_number: str) -> dict[str, object]:
    """A credit-bureau summary from SHA-256 of the ID number: byte0 % 20 == 0 -> NO_RECORD;
    otherwise loans, overdue counts by severity and multi-lender inquiries over 1/3/6 months
    (each window at least the one before)."""
    del name
    d = _digest("credit", normalize_id(id_number))
    if d[0] % 20 == 0:
        return {"result": "NO_RECORD"}
    # Most people have few inquiries; some shop around; a few are everywhere.
    m1 = d[1] % 3 if d[1] % 4 == 0 else 0
    m3 = m1 + (d[2] % 6 if d[2] % 3 == 0 else d[2] % 2)
    m6 = m3 + d[3] % 3
    return {
        "result": "FOUND",
        "loans": d[4] % 8,
        "overdue": {
            "m1": d[5] % 3 if d[6] % 4 == 0 else 0,
            "m3": d[7] % 2 if d[8] % 8 == 0 else 0,
            "m6_plus": 1 if d[9] % 16 == 0 else 0,
        },
        "inquiries": {"m1": m1, "m3": m3, "m6": m6},
    }


_TRADITIONAL = str.maketrans(
    {
        "张": "張",
        "伟": "偉",
        "欧": "歐",
        "阳": "陽",
        "丽": "麗",
        "刘": "劉",
        "陈": "陳",
        "杨": "楊",
        "黄": "黃",
        "赵": "趙",
        "吴": "吳",
        "孙": "孫",
        "马": "馬",
        "郭": "郭",
        "罗": "羅",
        "军": "軍",
        "洋": "洋",
        "艳": "艷",
        "杰": "傑",
        "娟": "娟",
        "涛": "濤",
        "兰": "蘭",
        "霞": "霞",
        "刚": "剛",
        "英": "英",
    }
)


def _masked(id_number: str) -> str:
    """The public list's form: first 4 and last 4 shown."""
    return id_number[:4] + "*" * (len(id_number) - 8) + id_number[-4:]


def court_entries(name: str, id_number: str, *, today: date | None = None) -> list[dict]:
    """The dishonest-debtor list's entries for a query, from SHA-256 of the ID number (first
    two bytes, mod 100):
    0 a confirmed entry (the vendor matched the full ID); 1 a public entry, masked ID, the
    name in traditional characters; 2 a public entry with the same masked ID but another
    person's name (must not match); 3 a confirmed entry whose case number is malformed;
    4 a confirmed entry closed for lack of property (终结本次执行程序); else none."""
    today = today or datetime.now(UTC).date()
    number = normalize_id(id_number)
    d = _digest("court", number)
    bucket = int.from_bytes(d[:2], "big") % 100
    year = today.year - 1 - d[1] % 5
    base = {
        "case_number": f"({year})京0105执{100 + d[2]}号",
        "court": "北京市朝阳区人民法院",
        "province": "北京",
        "performance": "全部未履行",
        "conduct": "有履行能力而拒不履行生效法律文书确定义务",
        "filed_at": f"{year}-03-0{1 + d[3] % 9}",
        "published_at": f"{year}-06-1{d[4] % 9}",
        "status": "active",
    }
    if bucket == 0:
        return [{**base, "match": "confirmed", "name": name, "id_masked": _masked(number)}]
    if bucket == 1:
        return [
            {
                **base,
                "match": "public",
                "name": name.translate(_TRADITIONAL),
                "id_masked": _masked(number),
            }
        ]
    if bucket == 2:
        return [{**base, "match": "public", "name": "司马懿", "id_masked": _masked(number)}]
    if bucket == 3:
        return [
            {
                **base,
                "match": "confirmed",
                "name": name,
                "id_masked": _masked(number),
                "case_number": f"({today.year + 2})京0105执{d[2]}号",
            }
        ]
    if bucket == 4:
        return [
            {
                **base,
                "match": "confirmed",
                "name": name,
                "id_masked": _masked(number),
                "status": "terminated_no_property",
                "performance": "部分未履行",
            }
        ]
    return []
