from datetime import UTC, datetime, timedelta

import pytest

from policies import catalog
from policies.consent import ConsentGrant, GrantRuleError, authorize, check_grant

NOTICES = catalog.notices()
NEW, OLD = "privacy-notice-2026.10", "privacy-notice-2026.04"

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
STEP = frozenset({"id_verification"})


def grant(**kw):
    base = dict(
        consent_id="c1",
        subject_ref="A-1",
        purpose="onboarding_verification",
        scopes=frozenset({"id_verification", "risk_scoring"}),
        granted_at=NOW - timedelta(days=1),
        expires_at=NOW + timedelta(days=300),
        notice_version="privacy-notice-2026.10",
    )
    base.update(kw)
    return ConsentGrant(**base)


def decide(grants, scopes=STEP, purpose="onboarding_verification"):
    return authorize(
        grants,
        notices=NOTICES,
        subject_ref="A-1",
        purpose=purpose,
        scopes=scopes,
        step="id_check",
        now=NOW,
    )


def test_when_a_live_grant_covers_the_scopes_then_the_step_is_allowed_under_it():
    d = decide([grant()])
    assert d.allowed and d.reason == "granted" and d.consent_ids == ("c1",)


@pytest.mark.parametrize(
    "grants, reason",
    [
        ([], "no_consent"),
        ([grant(withdrawn_at=NOW - timedelta(minutes=1))], "withdrawn"),
        ([grant(expires_at=NOW)], "expired"),
        ([grant(granted_at=NOW + timedelta(hours=1))], "not_yet_valid"),
        ([grant(purpose="ongoing_monitoring")], "wrong_purpose"),
        ([grant(scopes=frozenset({"risk_scoring"}))], "missing_scope"),
        ([grant(subject_ref="A-2")], "no_consent"),
        ([grant(notice_version="privacy-notice-1999")], "scope_not_in_notice"),
        ([grant(notice_hash="0" * 64)], "scope_not_in_notice"),
    ],
)
def test_when_no_live_grant_covers_the_step_then_it_is_refused_with_the_reason(grants, reason):
    d = decide(grants)
    assert not d.allowed
    assert d.reason == reason
    assert d.consent_ids == ()


def test_when_a_withdrawal_is_dated_after_now_then_the_grant_still_covers_now():
    assert decide([grant(withdrawn_at=NOW + timedelta(seconds=1))]).allowed


def test_when_separate_grants_cover_separate_scopes_then_together_they_allow_the_step():
    d = decide(
        [
            grant(consent_id="a", scopes=frozenset({"id_verification"})),
            grant(consent_id="b", scopes=frozenset({"carrier_check"})),
        ],
        scopes=frozenset({"id_verification", "carrier_check"}),
    )
    assert d.allowed and set(d.consent_ids) == {"a", "b"}


def test_when_one_of_two_needed_grants_is_withdrawn_then_the_step_is_refused():
    d = decide(
        [
            grant(consent_id="a", scopes=frozenset({"id_verification"})),
            grant(
                consent_id="b",
                scopes=frozenset({"carrier_check"}),
                withdrawn_at=NOW - timedelta(seconds=1),
            ),
        ],
        scopes=frozenset({"id_verification", "carrier_check"}),
    )
    assert not d.allowed and d.reason == "withdrawn"
    assert d.missing_scopes == frozenset({"carrier_check"})


def test_when_a_grant_is_renewed_after_withdrawal_then_the_new_grant_allows():
    d = decide(
        [
            grant(consent_id="old", withdrawn_at=NOW - timedelta(days=1)),
            grant(consent_id="new", granted_at=NOW - timedelta(hours=1)),
        ]
    )
    assert d.allowed and d.consent_ids == ("new",)


def test_when_the_notice_does_not_list_a_scope_then_a_grant_under_it_does_not_cover_it():
    old = grant(notice_version=OLD, scopes=frozenset({"wechat_profile"}))
    d = decide([old], scopes=frozenset({"wechat_profile"}))
    assert not d.allowed and d.reason == "scope_not_in_notice"
    assert decide([grant(notice_version=OLD)]).allowed


def test_when_the_notice_does_not_list_the_purpose_then_nothing_is_covered():
    g = grant(notice_version=OLD, purpose="ongoing_monitoring")
    d = decide([g], purpose="ongoing_monitoring")
    assert not d.allowed and d.reason == "scope_not_in_notice"


def test_when_the_grant_records_the_notice_hash_it_saw_then_it_covers():
    g = grant(notice_hash=NOTICES[NEW].text_sha256)
    assert decide([g]).allowed


POLICY = catalog.consent_policy()


def check(**kw):
    base = dict(
        purpose="onboarding_verification",
        scopes=frozenset({"id_verification"}),
        notice_version="privacy-notice-2026.10",
        granted_at=NOW - timedelta(days=1),
        expires_at=NOW + timedelta(days=300),
        now=NOW,
    )
    base.update(kw)
    return check_grant(POLICY, NOTICES, **base)


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"purpose": "marketing"}, "consents.purpose"),
        ({"scopes": frozenset({"location_track"})}, "consents.scopes"),
        ({"notice_version": "privacy-notice-1999"}, "consents.notice_version"),
        (
            {"granted_at": NOW + timedelta(days=1), "expires_at": NOW + timedelta(days=30)},
            "consents.granted_at",
        ),
        ({"expires_at": NOW - timedelta(days=2)}, "consents.expires_at"),
        ({"expires_at": NOW + timedelta(days=900)}, "consents.expires_at"),
        ({"scopes": frozenset({"id_verification", "court_records"})}, "consents.scopes"),
        ({"scopes": frozenset({"wechat_profile"}), "notice_version": OLD}, "consents.scopes"),
        ({"purpose": "ongoing_monitoring", "notice_version": OLD}, "consents.purpose"),
        ({"notice_hash": "0" * 64}, "consents.notice_hash"),
        ({"scopes": frozenset()}, "consents.scopes"),
    ],
)
def test_when_a_grant_breaks_the_policy_then_it_is_refused_naming_the_field(kw, field):
    with pytest.raises(GrantRuleError) as err:
        check(**kw)
    assert err.value.field == field


def test_when_a_grant_keeps_to_the_policy_then_it_is_accepted_with_its_notice():
    assert check().version == NEW
    check(scopes=frozenset({"id_verification", "risk_scoring", "wechat_profile"}))


def test_when_sensitive_scopes_are_bundled_then_the_rule_says_each_needs_its_own_grant():
    with pytest.raises(GrantRuleError, match="sensitive"):
        check(scopes=frozenset({"credit_report", "court_records"}))


def test_when_the_policy_names_step_scopes_then_they_are_known_scopes():
    assert POLICY.steps["id_check"] == frozenset({"id_verification"})
    assert "wechat_profile" in POLICY.optional() and "credit_report" in POLICY.sensitive()


@pytest.mark.parametrize(
    "kw, field, rule",
    [
        # dated before its notice was published (privacy-notice-2026.10: October 2026)
        (
            {
                "granted_at": datetime(2026, 9, 1, tzinfo=UTC),
                "expires_at": NOW + timedelta(days=10),
            },
            "consents.granted_at",
            "published",
        ),
        (
            {
                "granted_at": datetime(1900, 1, 1, tzinfo=UTC),
                "expires_at": datetime(1900, 6, 1, tzinfo=UTC),
            },
            "consents.granted_at",
            "published",
        ),
        (
            {"granted_at": NOW - timedelta(days=40), "expires_at": NOW - timedelta(days=1)},
            "consents.expires_at",
            "already past",
        ),
        (
            {"granted_at": NOW + timedelta(minutes=6), "expires_at": NOW + timedelta(days=30)},
            "consents.granted_at",
            "clock skew",
        ),
    ],
)
def test_when_a_grant_is_dated_where_no_consent_can_be_then_it_is_refused(kw, field, rule):
    with pytest.raises(GrantRuleError) as err:
        check(**kw)
    assert err.value.field == field and rule in err.value.rule


def test_when_a_grant_is_a_few_minutes_ahead_of_our_clock_then_it_is_accepted():
    check(granted_at=NOW + timedelta(minutes=4), expires_at=NOW + timedelta(days=30))
