"""A reveal's reason must be words (issue 29, R4l): `1234567890` has ten different characters
and passed the rule against one character repeated. Now digits and signs alone are refused,
naming the reason, and nothing is revealed or counted; on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from policies import catalog
from policies.access import AccessDenied, check_free_text
from services.errors import ServiceError
from tests.integration.test_cases import SUPER, flagged, runtime  # noqa: F401 - a fixture


@pytest.mark.parametrize("reason", ["1234567890", "2026-118 / 42", "+86 138 0013 8000"])
def test_a_reason_of_digits_and_signs_is_not_a_reason(reason):
    with pytest.raises(AccessDenied) as refused:
        check_free_text(catalog.access_policy(), reason)
    assert refused.value.field == "reason" and reason not in refused.value.rule


def test_a_reason_in_words_with_numbers_beside_them_stands():
    check_free_text(catalog.access_policy(), "PBoC inquiry 2026-118")
    check_free_text(catalog.access_policy(), "客户来电要求核实身份信息")


def test_when_a_reveal_gives_digits_for_its_reason_then_nothing_is_revealed(runtime):  # noqa: F811
    svc = runtime.services.cases
    case_id = flagged(runtime, "RW-1")
    before = len(runtime.store.audit.events(subject_ref="RW-1"))
    with pytest.raises(ServiceError) as refused:
        svc.reveal(
            case_id,
            {"field": "phone", "reason_code": "applicant_contact", "reason": "1234567890"},
            actor=SUPER,
        )
    assert refused.value.field == "reason"
    kinds = [e.kind for e in runtime.store.audit.events(subject_ref="RW-1")[before:]]
    assert not any(k.endswith("revealed") or k == "subject.revealed" for k in kinds), kinds
    shown = svc.reveal(
        case_id,
        {"field": "phone", "reason_code": "applicant_contact", "reason": "call to confirm it"},
        actor=SUPER,
    )
    assert shown.value  # the same reveal with a reason in words goes through (never printed)
