"""Commands that read or change data refuse when nobody is signed in (issue 29, E6): `idv
consent grant` recorded a grant, and `consent show` and `explain` printed a subject's
grants and decision, with no one signed in, as did `oauth show` and `refresh`, `review wake`
and `policy backtest`. Now each is refused (exit 2, `login` and the rule on stderr) and
nothing is recorded. tests/contract/test_commands_signed_in.py holds every other command to
the same."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import sign_in
from tests.e2e.test_consent_cli import GRANT
from tests.support import run_idv

pytestmark = pytest.mark.e2e


def test_with_nobody_signed_in_no_consent_command_records_or_shows_anything(tmp_path):
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    bare["IDV_HOME"] = str(tmp_path / "home")
    nobody = dict(bare)
    for args in (
        GRANT,
        ["consent", "show", "A-7"],
        ["consent", "stats"],
        ["explain", "A-7"],
        ["oauth", "show", "A-7"],
        ["oauth", "refresh"],
        ["review", "wake"],
        ["policy", "backtest", "--outcomes", "labels.csv"],
        [
            "consent", "ask", "A-7", "--purpose", "onboarding_verification",
            "--scope", "id_verification", "--notice", "privacy-notice-2026.10",
            "--channel", "app", "--outcome", "refused",
        ],
    ):  # fmt: skip
        refused = run_idv(nobody, *args, "--json")
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        assert json.loads(refused.stderr)["error"].startswith("login"), refused.stderr
        assert refused.stdout == ""
    # Signed in, the grant is recorded and shown: the refusal was nobody's, not the grant's.
    signed = sign_in(dict(bare), "compliance_officer")
    granted = run_idv(signed, *GRANT, "--json")
    assert granted.returncode == 0, granted.stderr
    shown = json.loads(run_idv(signed, "consent", "show", "A-7", "--json").stdout)
    assert shown["total"] == 1  # the refused grant above recorded nothing
