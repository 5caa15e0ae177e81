"""The password policy on the command line, as on the users page (test_sign_in_hardening), on
SQLite and PostgreSQL: `idv users add` and `idv users reset-password` refuse a common or
guessable password with one line naming the field and the rule (never the password), exit 2,
and nothing is made or changed; a strong one is taken."""

from __future__ import annotations

import io

import pytest

from idv.cli import main
from tests.conftest import person_token

WEAK = ("password1234", "123456789012", "qwertyuiop12")
STRONG = "cobalt harbour 7 lantern"


@pytest.fixture
def cli(database, make_runtime, monkeypatch, capsys):
    rt = make_runtime()
    token = person_token(rt, "operator", name="ops")
    env = {
        "IDV_HOME": str(rt.settings.home),
        **database.env(),
        "IDV_KEY_FILE": str(rt.settings.key_file),
        "IDV_TOKEN": token,
        "IDV_AUTO_MIGRATE": "0",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)

    def run(*argv: str, stdin: str) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin + "\n"))
        with pytest.raises(SystemExit) as ended:
            main(list(argv))
        out = capsys.readouterr()
        return int(ended.value.code or 0), out.out, out.err

    return rt, run


@pytest.mark.parametrize("weak", WEAK)
def test_a_common_password_is_refused_on_the_command_line_naming_the_rule(cli, weak):
    rt, run = cli
    code, out, err = run("users", "add", "eve", "--role", "analyst", "--password-stdin", stdin=weak)
    assert code == 2 and out == ""
    assert err.startswith("error: password: ") and len(err.strip().splitlines()) == 1
    assert weak not in err and "Traceback" not in err
    assert rt.store.people.get("eve") is None
    code, _, err = run("users", "reset-password", "ops", "--password-stdin", stdin=weak)
    assert code == 2 and err.startswith("error: password: ") and weak not in err


def test_a_strong_password_is_taken_on_the_command_line(cli):
    rt, run = cli
    code, _, err = run("users", "add", "eve", "--role", "analyst", "--password-stdin", stdin=STRONG)
    assert code == 0, err
    assert rt.store.people.get("eve") is not None
