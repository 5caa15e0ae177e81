"""`idv users list` says how many people there are: a `total` under `--json`, the count in
the table's title otherwise."""

from __future__ import annotations

import json
import os

from tests.conftest import E2E_PASSWORD, sign_in
from tests.support import run_idv


def test_when_users_are_listed_then_the_list_says_how_many(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    env.update(IDV_HOME=str(tmp_path / "home"), COLUMNS="120")
    sign_in(env, "operator")
    for name, role in (("li.na", "analyst"), ("wei", "supervisor")):
        added = run_idv(
            env, "users", "add", name, "--role", role, "--password-stdin", stdin=E2E_PASSWORD + "\n"
        )
        assert added.returncode == 0, added.stderr
    listed = run_idv(env, "users", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    body = json.loads(listed.stdout)
    assert body["total"] == len(body["users"]) == 3
    shown = run_idv(env, "users", "list")
    assert shown.returncode == 0 and "Users (3)" in shown.stdout
