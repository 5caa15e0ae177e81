"""The dishonest judgment-debtor list (失信被执行人名单), through a licensed vendor.

An entry the vendor matched on the full ID number is `confirmed`; a public-list entry with a
masked ID matches as `probable` when the name agrees (the same characters, across simplified
and traditional, or a romanised spelling with the surname's own reading, in either order:
`policies.name_match`) and the shown ID prefix and suffix agree. A homophone (王小明 /
王晓明) is another person: not weighed here (the whole-book re-screen keeps it as `possible`).
A hit is evidence for a person to weigh (entries are removed within days of payment:
re-query before any adverse decision); it never declines anyone by itself. A case number
that breaks its era's rule (`policies.case_number`: malformed, unknown court or type code,
future-dated) flags the record as suspect.

An entry carries what the court publishes: the case number, the enforcing court and its
province, the basis document (`gist_id`, issued by `gist_unit`), the obligation it fixed
(`duty`), its performance (全部未履行 / 部分未履行), the dishonest conduct and the filing and
publication dates. A person may have several entries, across courts and years. Whether a
case was closed for lack of property (终结本次执行程序) is another dataset (终本案件), not
this list: no signal of it is read from here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import date
from typing import ClassVar, Literal

from policies.case_number import case_number_problem
from policies.name_match import STRENGTH, masked_id_matches, match_names
from verifiers.base import ConsentPermit, Evidence, Signal, StepStatus, Subject
from verifiers.vendor import LicensedAnswer, VendorAnswer, VendorVerifier


class CourtEntry(VendorAnswer):
    """One entry of the list. `match` is `confirmed` (the vendor matched the full ID number)
    or `public` (the published entry, its ID masked: `name` and `id_masked` say whose it
    may be); an entry of another kind is not weighed. The rest is the court's record (its
    own field names in brackets)."""

    match: str
    case_number: str  # caseCode
    court: str  # courtName
    province: str  # areaName
    gist_id: str  # the basis document's number (执行依据文号)
    gist_unit: str  # who issued the basis document (做出执行依据单位)
    duty: str  # the obligation the effective instrument fixed (生效法律文书确定的义务)
    performance: str  # 全部未履行 / 部分未履行
    conduct: str = ""  # disruptTypeName: the dishonest conduct (失信被执行人行为具体情形)
    filed_at: date | None = None  # regDate
    published_at: date | None = None  # publishDate
    name: str = ""
    id_masked: str = ""


# The weakest name match that makes a public entry `probable`: a romanised spelling.
_NAME_BAR = STRENGTH["romanised"]


def _name_agrees(ours: str, theirs: str) -> bool:
    kind = match_names(ours, theirs)
    return kind is not None and STRENGTH[kind] >= _NAME_BAR


class CourtListAnswer(LicensedAnswer):
    """`/v1/court/dishonest`: the entries the vendor found for the name and number."""

    result: Literal["HIT", "NO_HIT"]
    entries: tuple[CourtEntry, ...]


def assess_entries(
    name: str, id_number: str, entries: Iterable[CourtEntry], *, current_year: int
) -> dict[str, str]:
    """Signals from the list's entries for one person: hit level, suspect records (with
    `court_record_rule`, the rule the first suspect case number broke), and `court_entries`:
    the entries weighed (case number, level, status: the entry's performance, suspect rule)
    as JSON text, so that a whitelisted entry can be taken out later (`without_entries`).
    Entries that are someone else's (name or masked ID disagree, or a homophone) are
    ignored."""
    weighed: list[dict[str, str]] = []
    for e in entries:
        if e.match == "confirmed":
            level = "confirmed"
        elif (
            e.match == "public"
            and _name_agrees(name, e.name)
            and masked_id_matches(id_number, e.id_masked)
        ):
            level = "probable"
        else:
            continue
        problem = case_number_problem(e.case_number, current_year=current_year)
        weighed.append(
            {
                "case_number": e.case_number,
                "level": level,
                "status": e.performance,
                "suspect": problem or "",
            }
        )
    return signals_of(weighed)


def signals_of(weighed: Iterable[dict[str, str]]) -> dict[str, str]:
    """The court signals of the entries weighed (see `assess_entries`)."""
    hit, suspect = "none", "no"
    rule: str | None = None
    kept = list(weighed)
    for e in kept:
        if e["level"] == "confirmed" or hit == "none":
            hit = e["level"]
        if e.get("suspect"):
            suspect = "yes"
            rule = rule or e["suspect"]
    signals = {
        "court_hit": hit,
        "court_record_suspect": suspect,
        "court_entries": json.dumps(kept, ensure_ascii=False, separators=(",", ":")),
    }
    if rule is not None:
        signals["court_record_rule"] = rule
    return signals


def entries_of(signals: Mapping[str, object]) -> list[dict[str, str]]:
    """The entries a court step weighed, from its signals (none for older evidence)."""
    raw = signals.get("court_entries")
    if isinstance(raw, str):
        loaded = json.loads(raw)
        return [e for e in loaded if isinstance(e, dict)]
    return list(raw) if isinstance(raw, list) else []


STATUS_OF = {
    "none": StepStatus.PASSED,
    "probable": StepStatus.INCONCLUSIVE,
    "confirmed": StepStatus.FAILED,
}
REASON_OF = {"none": "NO_HIT", "probable": "PROBABLE_HIT", "confirmed": "CONFIRMED_HIT"}


def without_entries(
    signals: Mapping[str, object], cleared: set[str]
) -> tuple[StepStatus, str, dict[str, object]] | None:
    """A court step's status, reason and signals with the entries whose case numbers are in
    `cleared` (a whitelist) taken out; None when none of its entries is cleared."""
    entries = entries_of(signals)
    kept = [e for e in entries if e.get("case_number") not in cleared]
    if len(kept) == len(entries):
        return None
    fresh: dict[str, object] = {k: v for k, v in signals.items() if not k.startswith("court_")}
    fresh.update(signals_of(kept))
    fresh["court_whitelisted"] = len(entries) - len(kept)
    hit = str(fresh["court_hit"])
    return STATUS_OF[hit], REASON_OF[hit], fresh


class CourtListVerifier(VendorVerifier[CourtListAnswer]):
    """`passed` without a hit; `inconclusive` for a probable match; `failed` for a confirmed
    one (the scorecard sends it to a person, never to an automatic decline)."""

    name: ClassVar[str] = "court_list"
    purpose: ClassVar[str] = "onboarding_verification"
    scopes: ClassVar[frozenset[str]] = frozenset({"court_records"})
    vendor = "court"
    # The vendor paths this step calls: how its lines are told apart on a statement.
    endpoints: ClassVar[tuple[str, ...]] = ("/v1/court/dishonest",)
    answer = CourtListAnswer

    async def verify(self, subject: Subject, permit: ConsentPermit) -> Evidence:
        name = subject.name.get_secret_value()
        number = subject.id_number.get_secret_value()
        reply, answer = await self._ask(
            "/v1/court/dishonest", {"name": name, "id_number": number}, permit
        )
        if answer is None:
            return self.unusable(permit, reply)
        found = assess_entries(name, number, answer.entries, current_year=answer.as_of.year)
        status, reason = STATUS_OF[found["court_hit"]], REASON_OF[found["court_hit"]]
        signals: dict[str, Signal] = dict(found)
        return Evidence(
            status=status,
            reason=reason,
            result_code=answer.result,
            vendor_request_id=answer.request_id,
            as_of=answer.as_of,
            fee_cents=answer.fee_cents,
            signals=signals,
            **self._base(permit, reply),
        )
