"""An OAuth failure is a service refusal like any other: the surfaces' ServiceError handling
covers it, with the provider's code and the HTTP status it calls for."""

from __future__ import annotations

import pytest

from services.errors import ServiceError
from services.oauth import OAuthFailure, _wechat_failure


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid"),
        (403, "denied"),
        (404, "not_found"),
        (500, "unavailable"),
        (502, "unavailable"),
        (503, "unavailable"),
        (504, "unavailable"),
    ],
)
def test_an_oauth_failure_is_a_service_error_whose_kind_follows_its_status(status, kind):
    failure = OAuthFailure("some_code", "what went wrong", status=status)
    assert isinstance(failure, ServiceError)
    assert (failure.kind, failure.code, failure.status) == (kind, "some_code", status)
    assert (failure.field, failure.rule) == ("provider", "what went wrong")


def test_when_wechat_refuses_the_code_then_the_field_at_fault_is_the_code():
    refused = _wechat_failure(40029)
    assert (refused.status, refused.field, refused.kind) == (400, "code", "invalid")
    busy = _wechat_failure(-1)
    assert (busy.status, busy.field, busy.kind) == (503, "provider", "unavailable")
