"""The dishonest judgment-debtor list (失信被执行人名单), through a licensed vendor.

An entry the vendor matched on the full ID number is `confirmed`; a public-list entry with a
masked ID matches as `probable` when the name agrees (across simplified and traditional
characters, or in pinyin) and the shown ID prefix and suffix agree. A hit is evidence for a
person to weigh (entries are removed within days of payment: re-query before any adverse
decision); it never declines anyone by itself. Malformed or future-dated case numbers flag
the record as suspect; a case closed for lack of property (终结本次执行程序) is a signal.
"""

from __future__ import annotations

from datetime import date
from typing import Any, ClassVar

from policies.name_match import case_number_problem, masked_id_matches, match_names
from verifiers.base import ConsentPermit, Evidence, StepStatus, Subject
from verifiers.vendor import VendorVerifier


def assess_entries(name: str, id_number: str, entries: list[dict[str, Any]], *,
                   current_year: int) -> dict[str, str]:
    """Signals from the list's entries for one person: hit level, suspect records, property
    clue. Entries that are someone else's (name or masked ID disagree) are ignored."""
    hit, suspect, no_property = "none", "no", "no"
    for e in entries:
        if e.get("match") == "confirmed":
            level = "confirmed"
        elif (e.get("match") == "public" and match_names(name, str(e.get("name", "")))
              and masked_id_matches(id_number, str(e.get("id_masked", "")))):
            level = "probable"
        else:
            continue
        if level == "confirmed" or hit == "none":
            hit = level
        if case_number_problem(str(e.get("case_number", "")), current_year=current_year):
            suspect = "yes"
        if e.get("status") == "terminated_no_property":
            no_property = "yes"
    return {"court_hit": hit, "court_record_suspect": suspect,
            "court_no_property_case": no_property}


class CourtListVerifier(VendorVerifier):
    """`passed` without a hit; `inconclusive` for a probable match; `failed` for a confirmed
    one (the scorecard sends it to a person, never to an automatic decline)."""

    name: ClassVar[str] = "court_list"
    purpose: ClassVar[str] = "onboarding_verification"
    scopes: ClassVar[frozenset[str]] = frozenset({"court_records"})
    vendor = "court"
    # The vendor paths this step calls: how its lines are told apart on a statement.
    endpoints: ClassVar[tuple[str, ...]] = ("/v1/court/dishonest",)
    fee_cents: ClassVar[int] = 15

    async def verify(self, subject: Subject, permit: ConsentPermit) -> Evidence:
        name = subject.name.get_secret_value()
        number = subject.id_number.get_secret_value()
        reply = await self._call("/v1/court/dishonest", {"name": name, "id_number": number},
                                 permit)
        base = self._base(permit, reply)
        if reply.error is not None or reply.body is None:
            return Evidence(status=StepStatus.ERROR, reason=reply.error or "vendor_malformed",
                            **base)
        body = reply.body
        try:
            as_of, fee = date.fromisoformat(body["as_of"]), int(body["fee_cents"])
            request_id, entries = body["request_id"], body["entries"]
            if (not isinstance(request_id, str) or not isinstance(entries, list)
                    or body.get("result") not in ("HIT", "NO_HIT")
                    or not all(isinstance(e, dict) for e in entries)):
                raise ValueError("shape")
        except (KeyError, TypeError, ValueError):
            return Evidence(status=StepStatus.ERROR, reason="vendor_malformed", **base)
        signals = assess_entries(name, number, entries, current_year=as_of.year)
        status = {"none": StepStatus.PASSED, "probable": StepStatus.INCONCLUSIVE,
                  "confirmed": StepStatus.FAILED}[signals["court_hit"]]
        reason = {"none": "NO_HIT", "probable": "PROBABLE_HIT", "confirmed": "CONFIRMED_HIT"}[
            signals["court_hit"]]
        return Evidence(status=status, reason=reason, result_code=body["result"],
                        vendor_request_id=request_id, as_of=as_of, fee_cents=fee,
                        signals=signals, **base)
