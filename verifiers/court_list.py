"""The dishonest judgment-debtor list (失信被执行人名单), through a licensed vendor.

An entry the vendor matched on the full ID number is `confirmed`; a public-list entry with a
masked ID matches as `probable` when the name agrees (across simplified and traditional
characters, or in pinyin) and the shown ID prefix and suffix agree. A hit is evidence for a
person to weigh (entries are removed within days of payment: re-query before any adverse
decision); it never declines anyone by itself. A case number that breaks its era's rule
(`policies.case_number`: malformed, unknown court or type code, future-dated) flags the record
as suspect; a case closed for lack of property (终结本次执行程序) is a signal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Literal

from policies.case_number import case_number_problem
from policies.name_match import masked_id_matches, match_names
from verifiers.base import ConsentPermit, Evidence, StepStatus, Subject
from verifiers.vendor import LicensedAnswer, VendorAnswer, VendorVerifier


class CourtEntry(VendorAnswer):
    """One entry of the list. `match` is `confirmed` (the vendor matched the full ID number)
    or `public` (the published entry, its ID masked: `name` and `id_masked` say whose it
    may be); an entry of another kind is not weighed."""

    match: str
    case_number: str
    status: str  # `terminated_no_property`: closed for lack of property (终结本次执行程序)
    name: str = ""
    id_masked: str = ""


class CourtListAnswer(LicensedAnswer):
    """`/v1/court/dishonest`: the entries the vendor found for the name and number."""

    result: Literal["HIT", "NO_HIT"]
    entries: tuple[CourtEntry, ...]


def assess_entries(name: str, id_number: str, entries: Iterable[CourtEntry], *,
                   current_year: int) -> dict[str, str]:
    """Signals from the list's entries for one person: hit level, suspect records (with
    `court_record_rule`, the rule the first suspect case number broke), property clue.
    Entries that are someone else's (name or masked ID disagree) are ignored."""
    hit, suspect, no_property = "none", "no", "no"
    rule: str | None = None
    for e in entries:
        if e.match == "confirmed":
            level = "confirmed"
        elif (e.match == "public" and match_names(name, e.name)
              and masked_id_matches(id_number, e.id_masked)):
            level = "probable"
        else:
            continue
        if level == "confirmed" or hit == "none":
            hit = level
        problem = case_number_problem(e.case_number, current_year=current_year)
        if problem is not None:
            suspect = "yes"
            rule = rule or problem
        if e.status == "terminated_no_property":
            no_property = "yes"
    signals = {"court_hit": hit, "court_record_suspect": suspect,
               "court_no_property_case": no_property}
    if rule is not None:
        signals["court_record_rule"] = rule
    return signals


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
        reply, answer = await self._ask("/v1/court/dishonest",
                                        {"name": name, "id_number": number}, permit)
        if answer is None:
            return self.unusable(permit, reply)
        signals = assess_entries(name, number, answer.entries, current_year=answer.as_of.year)
        status = {"none": StepStatus.PASSED, "probable": StepStatus.INCONCLUSIVE,
                  "confirmed": StepStatus.FAILED}[signals["court_hit"]]
        reason = {"none": "NO_HIT", "probable": "PROBABLE_HIT", "confirmed": "CONFIRMED_HIT"}[
            signals["court_hit"]]
        return Evidence(status=status, reason=reason, result_code=answer.result,
                        vendor_request_id=answer.request_id, as_of=answer.as_of,
                        fee_cents=answer.fee_cents, signals=signals,
                        **self._base(permit, reply))
