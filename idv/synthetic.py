"""Synthetic applicants for the demo and the tests: fictional people, valid-checksum IDs.

Deterministic for a seed, so the same demo batch twice is the same applicants.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policies.identity import check_character

if TYPE_CHECKING:
    from services.runs import DecidedApplicant

SURNAMES = [
    "王",
    "李",
    "张",
    "刘",
    "陈",
    "杨",
    "黄",
    "赵",
    "吴",
    "周",
    "徐",
    "孙",
    "马",
    "朱",
    "胡",
    "郭",
    "何",
    "高",
    "林",
    "罗",
    "欧阳",
    "司马",
    "诸葛",
    "𠮷",
]
GIVEN = [
    "伟",
    "芳",
    "娜",
    "秀英",
    "敏",
    "静",
    "丽",
    "强",
    "磊",
    "军",
    "洋",
    "勇",
    "艳",
    "杰",
    "娟",
    "涛",
    "明",
    "超",
    "秀兰",
    "霞",
    "平",
    "刚",
    "桂英",
    "子涵",
    "浩然",
    "雨桐",
]
MINORITY = ["阿依古丽·买买提", "热依拉·艾力", "迪丽娜尔·阿不都"]
# Real county-level division codes (GB/T 2260; intake checks that a code existed): where
# a number was issued. The people are fictional.
REGIONS = [
    "110105",
    "110108",
    "310104",
    "440305",
    "440106",
    "330106",
    "510107",
    "420106",
    "320102",
    "610113",
    "370202",
    "500103",
]
MOBILE_PREFIXES = ["138", "139", "135", "186", "158", "177", "199", "150", "136", "188"]
VIRTUAL_PREFIXES = ["170", "171", "165"]
FULL_SCOPES = ["id_verification", "carrier_check", "court_records", "credit_report", "risk_scoring"]
NOTICE = "privacy-notice-2026.10"


def make_id_number(rng: random.Random, *, born: date | None = None) -> str:
    region = rng.choice(REGIONS)
    born = born or date(1960, 1, 1) + timedelta(days=rng.randrange(365 * 44))
    seq = f"{rng.randrange(1, 1000):03d}"
    body = f"{region}{born:%Y%m%d}{seq}"
    return body + check_character(body)


def make_phone(rng: random.Random, *, virtual: bool = False) -> str:
    prefix = rng.choice(VIRTUAL_PREFIXES if virtual else MOBILE_PREFIXES)
    return prefix + f"{rng.randrange(10**8):08d}"


def make_name(rng: random.Random) -> str:
    if rng.random() < 0.03:
        return rng.choice(MINORITY)
    return rng.choice(SURNAMES) + rng.choice(GIVEN)


SENSITIVE = {"id_verification", "carrier_check", "court_records", "credit_report", "wechat_phone"}
OLD_NOTICE = "privacy-notice-2026.04"


def consents(now: datetime, scopes: list[str], rng: random.Random) -> list[dict[str, Any]]:
    """The grants one consent screen produces: one per sensitive scope (each its own
    affirmative act, PIPL Art. 29), the other scopes together."""
    granted = now - timedelta(days=rng.randrange(1, 30))
    notice, channel = (OLD_NOTICE, "web") if rng.random() < 0.2 else (NOTICE, "app")
    groups = [[s] for s in scopes if s in SENSITIVE]
    rest = [s for s in scopes if s not in SENSITIVE]
    if rest:
        groups.append(rest)
    return [
        {
            "purpose": "onboarding_verification",
            "scopes": group,
            "granted_at": (granted + timedelta(seconds=i)).isoformat(),
            "expires_at": (granted + timedelta(days=365)).isoformat(),
            "notice_version": notice,
            "channel": channel,
            "evidence": f"sha256:{rng.getrandbits(256):064x}",
        }
        for i, group in enumerate(groups)
    ]


@dataclass(frozen=True)
class Mix:
    """Shares of each kind of line in a generated batch."""

    no_consent: float = 0.08
    no_scoring_consent: float = 0.05
    invalid: float = 0.03  # below the batch gate (more than 5% halts a batch)
    virtual_phone: float = 0.05


INVALID_KINDS = (
    "bad_checksum",
    "future_birth",
    "short_id",
    "bad_phone",
    "empty_name",
    "not_json",
    "consent_shape",
)


def applicants(
    n: int, *, seed: int = 2026, now: datetime | None = None, prefix: str = "A-", mix: Mix = Mix()
) -> Iterator[dict[str, Any] | str]:
    """Yield `n` batch lines (dicts), a few of them broken (a raw string for non-JSON).

    Consents are granted in the 30 days before `now`; without `now`, the demo's people
    (`DEMO_SEED`) are granted them before the start of the 30-day period this day falls in,
    so the demo run again writes the same grants and the ledger records none twice."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
    consented = now or (demo_period(datetime.now(UTC)) if seed == DEMO_SEED else None)
    now = now or datetime.now(UTC)
    consented = consented or now
    for i in range(1, n + 1):
        ref = f"{prefix}{i:06d}"
        line: dict[str, Any] = {
            "applicant_ref": ref,
            "name": make_name(rng),
            "id_type": "resident_id",
            "id_number": make_id_number(rng),
            "phone": make_phone(rng, virtual=rng.random() < mix.virtual_phone),
            "product": "consumer_loan",
            "consents": consents(consented, FULL_SCOPES, rng),
        }
        roll = rng.random()
        if roll < mix.invalid:
            kind = INVALID_KINDS[i % len(INVALID_KINDS)]
            if kind == "not_json":
                yield "{" + json.dumps(ref) + ": not json"
                continue
            if kind == "bad_checksum":
                good = line["id_number"]
                line["id_number"] = good[:-1] + ("0" if good[-1] != "0" else "1")
            elif kind == "future_birth":
                body = f"{REGIONS[0]}{now.year + 1}0101123"
                line["id_number"] = body + check_character(body)
            elif kind == "short_id":
                line["id_number"] = line["id_number"][:12]
            elif kind == "bad_phone":
                line["phone"] = "12345"
            elif kind == "empty_name":
                line["name"] = "  "
            elif kind == "consent_shape":
                line["consents"] = [{"purpose": "onboarding_verification"}]
        elif roll < mix.invalid + mix.no_consent:
            line["consents"] = []
        elif roll < mix.invalid + mix.no_consent + mix.no_scoring_consent:
            line["consents"] = consents(consented, FULL_SCOPES[:-1], rng)
        yield line


# The demo's people: the same every time, so that running the demo again adds no one twice.
DEMO_SEED = 2026
# The demo's grants stay the same for this long: their times are counted back from the
# period's start, so each is still live (granted at most 60 days before, for 365 days).
DEMO_PERIOD = timedelta(days=30)


def demo_period(now: datetime) -> datetime:
    """The start (UTC midnight) of the 30-day period, counted from the Unix epoch, that
    `now` falls in."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + (now - epoch) // DEMO_PERIOD * DEMO_PERIOD


def write_batch(path: Path, n: int, *, seed: int | None = None, **kwargs: Any) -> Path:
    """`n` fictional batch lines (`applicants`) written to `path`. Without a `seed`, new
    people each time: a batch of one's own never collides with the demo's (`DEMO_SEED`) or
    another's, whose shared ID numbers would score `ID_SHARED_ACROSS_APPLICATIONS`."""
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True)
    chosen = secrets.randbits(32) if seed is None else seed
    with path.open("w", encoding="utf-8") as fh:
        for line in applicants(n, seed=chosen, **kwargs):
            fh.write(
                (line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n"
            )
    return path


# Synthetic "truth" for the backtest demo: the chance that a fictional applicant later
# defaults, from what the sources said (never from the score itself), plus a base rate.
_BAD_WEIGHTS = {
    ("id_check", "failed"): 0.6,
    ("carrier_check", "failed"): 0.25,
    ("credit_overdue", "severe"): 0.5,
    ("credit_overdue", "serious"): 0.3,
    ("credit_overdue", "minor"): 0.08,
    ("credit_multi_lender", "high"): 0.3,
    ("credit_multi_lender", "medium"): 0.12,
    ("court_hit", "confirmed"): 0.35,
    ("court_hit", "probable"): 0.15,
    ("phone_tenure", "lt_6m"): 0.05,
    ("phone_range", "virtual_operator"): 0.1,
    ("id_reuse", "shared"): 0.2,
}


def label_outcomes(decisions: list[DecidedApplicant], *, seed: int = 2026) -> list[tuple[str, str]]:
    """(applicant_ref, good | bad) for stored decisions: a labelled history to backtest on."""
    out = []
    for d in decisions:
        p = 0.04 + sum(
            w for (feature, value), w in _BAD_WEIGHTS.items() if d.features.get(feature) == value
        )
        rng = random.Random(f"{seed}:{d.applicant_ref}")  # noqa: S311 - synthetic
        out.append((d.applicant_ref, "bad" if rng.random() < min(p, 0.95) else "good"))
    return out


def write_outcomes(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("applicant_ref,outcome\n")
        for ref, label in rows:
            fh.write(f"{ref},{label}\n")
    return path
