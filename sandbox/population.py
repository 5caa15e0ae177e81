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


# Courts the imitation's entries come from: (court, its case-number code, province). Basic
# courts carry 4 digits after the province's character, intermediate ones 2 (法〔2015〕137号).
COURTS: tuple[tuple[str, str, str], ...] = (
    ("北京市朝阳区人民法院", "京0105", "北京"),
    ("北京市海淀区人民法院", "京0108", "北京"),
    ("北京市第二中级人民法院", "京02", "北京"),
    ("上海市浦东新区人民法院", "沪0115", "上海"),
    ("上海市第一中级人民法院", "沪01", "上海"),
    ("广州市天河区人民法院", "粤0106", "广东"),
    ("深圳市福田区人民法院", "粤0304", "广东"),
    ("杭州市西湖区人民法院", "浙0106", "浙江"),
    ("南京市玄武区人民法院", "苏0102", "江苏"),
    ("成都市武侯区人民法院", "川0107", "四川"),
    ("武汉市江岸区人民法院", "鄂0102", "湖北"),
    ("长沙市岳麓区人民法院", "湘0104", "湖南"),
    ("重庆市渝中区人民法院", "渝0103", "重庆"),
    ("西安市雁塔区人民法院", "陕0113", "陕西"),
)
# The grounds of Art. 1 of the SPC's provisions on the list (法释〔2017〕7号), as
# disruptTypeName carries them.
CONDUCTS = (
    "有履行能力而拒不履行生效法律文书确定义务",
    "违反财产报告制度",
    "违反限制消费令",
    "以伪造证据、暴力、威胁等方法妨碍、抗拒执行",
    "以虚假诉讼、虚假仲裁或者以隐匿、转移财产等方法规避执行",
    "无正当理由拒不履行执行和解协议",
)
PERFORMANCE = ("全部未履行", "部分未履行")
# Mask shapes the public list is sold in: shown prefix and suffix of an 18-character number.
MASK_SHAPES = ((4, 4), (3, 3), (6, 4))


def masked(id_number: str, prefix: int = 4, suffix: int = 4) -> str:
    """The public list's form: the first `prefix` and last `suffix` characters shown."""
    return id_number[:prefix] + "*" * (len(id_number) - prefix - suffix) + id_number[-suffix:]


def _masked(id_number: str) -> str:
    return masked(id_number)


def court_record(d: bytes, *, year: int, court: int, serial: int, performance: int = 0) -> dict:
    """One entry's court record from digest bytes: the enforcing court, its case number, the
    basis document (a civil judgment of the same court, or an arbitration award), the
    obligation it fixed, the performance, the conduct, filing and publication dates."""
    name, code, province = COURTS[court % len(COURTS)]
    amount = 1000 * (5 + d[6] % 200)
    if d[7] % 4 == 0:
        gist_id, gist_unit = f"({year - 1})京仲裁字第{100 + d[8]}号", "北京仲裁委员会"
    else:
        gist_id, gist_unit = f"({year - 1}){code}民初{1000 + d[8] * 7}号", name
    month, day = 1 + d[9] % 12, 1 + d[10] % 28
    return {
        "case_number": f"({year}){code}执{serial}号",
        "court": name,
        "province": province,
        "gist_id": gist_id,
        "gist_unit": gist_unit,
        "duty": f"被执行人于判决生效之日起十日内偿还借款本金人民币{amount}元及利息",
        "performance": PERFORMANCE[performance % 2],
        "conduct": CONDUCTS[d[11] % len(CONDUCTS)],
        "filed_at": f"{year}-{month:02d}-{day:02d}",
        "published_at": f"{year}-{month:02d}-{min(day + 14, 28):02d}",
    }


def court_entries(name: str, id_number: str, *, today: date | None = None) -> list[dict]:
    """The dishonest-debtor list's entries for a query, from SHA-256 of the ID number (first
    two bytes, mod 100):
    0 a confirmed entry (the vendor matched the full ID) at 北京市朝阳区人民法院;
    1 a public entry, the ID masked in one of the list's shapes (4+4, 3+3, 6+4), the name in
    traditional characters; 2 a public entry with the same masked ID but another person's
    name (must not match); 3 a confirmed entry whose case number is malformed (a future
    year); 4 several confirmed entries (2 to 4) across courts and years, one partly
    performed; else none. Every entry carries the court's record (`court_record`)."""
    today = today or datetime.now(UTC).date()
    number = normalize_id(id_number)
    d = _digest("court", number)
    bucket = int.from_bytes(d[:2], "big") % 100
    year = today.year - 1 - d[1] % 5
    serial = 100 + d[2]
    if bucket == 0:
        base = court_record(d, year=year, court=0, serial=serial)
        return [{**base, "match": "confirmed", "name": name, "id_masked": _masked(number)}]
    if bucket in (1, 2):
        prefix, suffix = MASK_SHAPES[d[5] % len(MASK_SHAPES)]
        base = court_record(d, year=year, court=d[12], serial=serial)
        other = name.translate(_TRADITIONAL) if bucket == 1 else "司马懿"
        return [
            {**base, "match": "public", "name": other, "id_masked": masked(number, prefix, suffix)}
        ]
    if bucket == 3:
        base = court_record(d, year=year, court=0, serial=serial)
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
        out = []
        for i in range(2 + d[13] % 3):
            e = _digest("court-entry", number, str(i))
            at = today.year - 1 - (i * 2 + e[1] % 2)
            base = court_record(
                e, year=at, court=d[12] + i * 5, serial=100 + e[2], performance=1 if i == 1 else 0
            )
            out.append({**base, "match": "confirmed", "name": name, "id_masked": _masked(number)})
        return out
    return []


# --- Facts about a person and a phone line, for the real vendors' imitations ----------------
# (`sandbox.tencent`, and any other vendor imitation that wants the same people): one truth per
# input, from every input it concerns, so two vendors asked about the same person agree on the
# facts and differ only in how they code them. The functions above stay as the generic
# endpoints use them.

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"  # GB 11643-1999: the check character of (sum of weighted digits) % 11


def id_number_valid(id_number: str) -> bool:
    """A mainland resident ID number as GB 11643-1999 defines it: 18 characters, 17 digits, a
    check character (ISO 7064 MOD 11-2), and a real date of birth in the 7th to 14th."""
    n = normalize_id(id_number)
    if len(n) != 18 or not n[:17].isdigit() or not (n[17].isdigit() or n[17] == "X"):
        return False
    if _ID_CHECK[sum(int(d) * w for d, w in zip(n[:17], _ID_WEIGHTS, strict=True)) % 11] != n[17]:
        return False
    try:
        born = date(int(n[6:10]), int(n[10:12]), int(n[12:14]))
    except ValueError:
        return False
    return date(1900, 1, 1) <= born <= datetime.now(UTC).date()


def _is_han(ch: str) -> bool:
    cp = ord(ch)
    # CJK Unified Ideographs, Extension A, and Extensions B to F (rare characters in names).
    return 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2EBEF


def name_valid(name: str) -> bool:
    """A name as the mainland's identity sources take it: 2 to 30 Han characters, minority
    names joined by a middle dot (·) that neither starts nor ends it."""
    n = unicodedata.normalize("NFKC", name).strip().replace("•", "·")
    if not 2 <= len(n) <= 30 or n[0] == "·" or n[-1] == "·":
        return False
    return all(_is_han(ch) or ch == "·" for ch in n)


Segment = Literal["invalid", "mobile", "unicom", "telecom", "broadnet", "virtual"]

# Number blocks by their first three digits (MIIT's allocations). The virtual operators'
# (170, 171, 162, 165, 167) and China Broadnet's 192 are the blocks the carriers' real-name
# checks do not serve.
_BLOCKS: dict[str, Segment] = {
    **dict.fromkeys(
        "134 135 136 137 138 139 147 148 150 151 152 157 158 159 172 178 182 183 184 187 188"
        " 195 197 198".split(),
        "mobile",
    ),
    **dict.fromkeys("130 131 132 145 146 155 156 166 175 176 185 186 196".split(), "unicom"),
    **dict.fromkeys("133 149 153 173 174 177 180 181 189 190 191 193 199".split(), "telecom"),
    "192": "broadnet",
    **dict.fromkeys("170 171 162 165 167".split(), "virtual"),
}


def phone_segment(phone: str) -> Segment:
    """Who serves a mainland mobile number: 11 digits, no country code (`+86` makes it
    invalid, as the carriers' checks take it)."""
    if len(phone) != 11 or not phone.isascii() or not phone.isdigit() or phone[0] != "1":
        return "invalid"
    return _BLOCKS.get(phone[:3], "invalid")


IdentityFact = Literal["MATCH", "MISMATCH", "NO_RECORD"]


def identity_fact(name: str, id_number: str) -> IdentityFact:
    """Whether the identity source has this ID number (3% have no record, by the ID number)
    and, if so, whether the name is the one it holds (8% of name and ID pairs are not, by both:
    another name for the same ID can answer differently)."""
    number = normalize_id(id_number)
    if _digest("identity-record", number)[0] % 100 < 3:
        return "NO_RECORD"
    given = unicodedata.normalize("NFKC", name).strip()
    if _digest("identity-name", number, given)[0] % 100 < 8:
        return "MISMATCH"
    return "MATCH"


LineStatus = Literal[
    "normal", "suspended", "cancelled", "not_in_network", "unavailable", "unknown", "no_record"
]
Tenure = Literal["[0,3)", "[3,6)", "[6,12)", "[12,24)", "[24,+)", "not_found", "unknown"]


def line_status(phone: str) -> LineStatus:
    """A number's status at its carrier, by SHA-256 of the number (byte 0, mod 100): 0-1 no
    record, 2-3 cancelled (销号), 4 not in the network, 5-7 suspended (停机), 8 in the network but
    unavailable, 9 unknown, else normal."""
    b = _digest("line-status", phone)[0] % 100
    if b < 2:
        return "no_record"
    if b < 4:
        return "cancelled"
    if b < 5:
        return "not_in_network"
    if b < 8:
        return "suspended"
    if b < 9:
        return "unavailable"
    if b < 10:
        return "unknown"
    return "normal"


def line_tenure(phone: str) -> Tenure:
    """How long the number has been in its network, in months, as carriers band it: a number
    with no record, cancelled or not in the network is `not_found`; 2% of the others have an
    unknown tenure; the rest [0,3) 10%, [3,6) 10%, [6,12) 15%, [12,24) 20%, [24,+) 45%."""
    if line_status(phone) in ("no_record", "cancelled", "not_in_network"):
        return "not_found"
    d = _digest("line-tenure", phone)
    if d[0] % 100 < 2:
        return "unknown"
    b = d[1] % 100
    if b < 10:
        return "[0,3)"
    if b < 20:
        return "[3,6)"
    if b < 35:
        return "[6,12)"
    if b < 55:
        return "[12,24)"
    return "[24,+)"


PhoneMismatch = Literal[
    "PhoneIdCardMismatch",
    "PhoneNameMismatch",
    "PhoneNameIdCardMismatch",
    "NameIdCardMismatch",
    "OtherMismatch",
]


def phone_fact(name: str, id_number: str, phone: str) -> tuple[IdentityFact, PhoneMismatch | None]:
    """Whether the carrier's real-name record of the number holds this name and ID number: no
    record when the line has none, is cancelled or out of the network; a mismatch when the name
    and ID number do not go together (`identity_fact`), or for 10% of (name, ID, phone) triples,
    with which element differs; else a match. Every input changes the answer."""
    if line_status(phone) in ("no_record", "cancelled", "not_in_network"):
        return "NO_RECORD", None
    if identity_fact(name, id_number) == "MISMATCH":
        return "MISMATCH", "NameIdCardMismatch"
    given = unicodedata.normalize("NFKC", name).strip()
    d = _digest("phone-owner", given, normalize_id(id_number), phone)
    if d[0] % 100 < 10:
        kinds: tuple[PhoneMismatch, ...] = (
            "PhoneIdCardMismatch",
            "PhoneNameMismatch",
            "PhoneNameIdCardMismatch",
            "OtherMismatch",
        )
        return "MISMATCH", kinds[d[1] % len(kinds)]
    return "MATCH", None


# Alibaba Cloud Cloudauth (`sandbox.aliyun`): every answer depends on every input the action
# takes. Each input is given as its key: the lower-case MD5 hex of the normalised value (what a
# caller sends itself with ParamType=md5), so a plain and an MD5 call about the same person get
# the same answer.

AliyunBiz = Literal["1", "2", "3"]
# Mobile segments of virtual operators (170/171/162/165/167) and of China Broadnet (192): the
# three-element checks answer them Code 405 (号段不支持), as Aliyun's error codes page says.
VIRTUAL_SEGMENTS = ("162", "165", "167", "170", "171", "192")
_ISP_BY_SEGMENT = {
    "CMCC": (
        "134 135 136 137 138 139 147 150 151 152 157 158 159 172 178 182 183 184 187 188 195 197"
        " 198"
    ).split(),
    "CUCC": "130 131 132 145 155 156 166 175 176 185 186 196".split(),
    "CTCC": "133 149 153 173 177 180 181 189 190 191 193 199".split(),
}


def aliyun_key(kind: Literal["id", "name", "phone"], value: str) -> str:
    """The MD5 key of a plain value: the ID number normalised (`normalize_id`), the name with
    its spaces taken off (NFKC), the phone without `+86` or spaces."""
    if kind == "id":
        plain = normalize_id(value)
    elif kind == "name":
        plain = "".join(unicodedata.normalize("NFKC", value).split())
    else:
        plain = "".join(value.split()).removeprefix("+86")
    return hashlib.md5(plain.encode("utf-8")).hexdigest()  # noqa: S324 - the vendor's form


def aliyun_identity(name_key: str, id_key: str) -> AliyunBiz:
    """Id2MetaVerify's BizCode: "3" (no record) for 5% of ID numbers; else "2" (inconsistent)
    for a tenth of (ID, name) pairs, "1" for the rest: another name on the same ID number may
    change the answer."""
    if _digest("aliyun-id", id_key)[0] % 20 == 0:
        return "3"
    return "2" if _digest("aliyun-id-name", id_key, name_key)[0] % 10 == 0 else "1"


def _phone_unknown(phone_key: str) -> bool:
    return _digest("aliyun-phone", phone_key)[0] % 20 == 0


def aliyun_mobile3(name_key: str, id_key: str, phone_key: str) -> tuple[AliyunBiz, str]:
    """Mobile3Meta*'s (BizCode, SubCode): no record ("3", "301") for 5% of numbers; the number's
    holder matches the ID number for 7 in 8 (phone, ID) pairs and the name for 7 in 8 (phone,
    name) pairs: both "1"/"101"; neither "2"/"201"; the name only "2"/"202"; the ID only
    "2"/"203"; and one in 50 of the consistent triples "2"/"204" (other inconsistency)."""
    if _phone_unknown(phone_key):
        return "3", "301"
    id_ok = _digest("aliyun-phone-id", phone_key, id_key)[0] % 8 != 0
    name_ok = _digest("aliyun-phone-name", phone_key, name_key)[0] % 8 != 0
    if id_ok and name_ok:
        other = _digest("aliyun-phone-other", phone_key, id_key, name_key)[0] % 50 == 0
        return ("2", "204") if other else ("1", "101")
    if not id_ok and not name_ok:
        return "2", "201"
    return ("2", "202") if name_ok else ("2", "203")


def aliyun_isp(phone: str | None, phone_key: str) -> str:
    """The carrier of a number by its segment; of an MD5 key (no segment known), by the key."""
    if phone is not None:
        segment = "".join(phone.split()).removeprefix("+86")[:3]
        for isp, segments in _ISP_BY_SEGMENT.items():
            if segment in segments:
                return isp
    return ("CMCC", "CUCC", "CTCC")[_digest("aliyun-isp", phone_key)[0] % 3]


def aliyun_online_status(phone_key: str) -> tuple[AliyunBiz, str]:
    """MobileOnlineStatus's (BizCode, SubCode): the numbers Mobile3Meta knows nothing of are
    ("3", "301"); of the others, by a byte of the key mod 100: 0-3 suspended "201", 4-6
    cancelled "202", 7-8 active but unavailable "203", 9 not activated "204" (all BizCode
    "2"), the rest active "101" ("1")."""
    if _phone_unknown(phone_key):
        return "3", "301"
    bucket = _digest("aliyun-status", phone_key)[0] % 100
    for limit, sub in ((4, "201"), (7, "202"), (9, "203"), (10, "204")):
        if bucket < limit:
            return "2", sub
    return "1", "101"


def aliyun_online_time(phone_key: str) -> tuple[AliyunBiz, str | None]:
    """MobileOnlineTime's (BizCode, TimeCode): no result ("3", None) for the unknown numbers;
    else TimeCode 1-5 ([0,3), [3,6), [6,12), [12,24), [24,+) months), one in ten under 3
    months, most over 24."""
    if _phone_unknown(phone_key):
        return "3", None
    bucket = _digest("aliyun-tenure", phone_key)[0] % 20
    code = (
        "1"
        if bucket < 2
        else "2"
        if bucket < 4
        else "3"
        if bucket < 7
        else "4"
        if bucket < 10
        else "5"
    )
    return "1", code
