"""`idv users add / disable / enable / role / reset-password / list / token`, `idv login`,
`idv logout`, `idv whoami`."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from idv.shell import JsonOpt, actor, app, runtime, token_file, users_app
from idv.terminal import console, emit, errors, fail

if TYPE_CHECKING:
    from pydantic import SecretStr

PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from the first line of standard input."
    ),
]
RoleOpt = Annotated[str, typer.Option("--role", help="A role of policies/access.yaml.")]


def _password(from_stdin: bool, *, confirm: bool, as_json: bool) -> SecretStr:
    from pydantic import SecretStr

    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            fail("--password-stdin", "no password on standard input", as_json=as_json)
        return SecretStr(line)
    if not sys.stdin.isatty():
        fail("password", "needs a terminal to prompt, or --password-stdin", as_json=as_json)
    return SecretStr(typer.prompt("Password", hide_input=True, confirmation_prompt=confirm))


def _shown(user: object, as_json: bool) -> None:
    data = user.model_dump(mode="json")  # type: ignore[attr-defined]
    if as_json:
        emit(data)
    else:
        console.print(f"{data['name']}: {data['role']}, {data['status']}")


@users_app.command("add")
def users_add(
    name: str,
    role: RoleOpt,
    password_stdin: PasswordStdin = False,
    sso_only: Annotated[
        bool, typer.Option("--sso-only", help="No password: signs in through OpenID Connect only.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a person. The first user may be added by anyone while nobody exists (make them
    an operator); every later one needs a signed-in user with `users`."""
    with runtime() as rt:
        people = rt.services.people
        who = actor() if people.any_user() else None
        password = None if sso_only else _password(password_stdin, confirm=True, as_json=as_json)
        _shown(people.add(name, role, password, actor=who), as_json)


@users_app.command("disable")
def users_disable(name: str, as_json: JsonOpt = False) -> None:
    """Disable a person: every token and session they hold stops at once."""
    with runtime() as rt:
        _shown(rt.services.people.disable(name, actor=actor()), as_json)


@users_app.command("enable")
def users_enable(name: str, as_json: JsonOpt = False) -> None:
    """Enable a disabled person again (and lift a lock-out)."""
    with runtime() as rt:
        _shown(rt.services.people.enable(name, actor=actor()), as_json)


@users_app.command("unlock")
def users_unlock(name: str, as_json: JsonOpt = False) -> None:
    """Lift a lock-out after repeated failed sign-ins (needs `users`)."""
    with runtime() as rt:
        _shown(rt.services.people.unlock(name, actor=actor()), as_json)


@users_app.command("role")
def users_role(
    name: str, role: Annotated[str, typer.Argument(help="The new role.")], as_json: JsonOpt = False
) -> None:
    """Change a person's role: their tokens and sessions stop; they sign in again."""
    with runtime() as rt:
        _shown(rt.services.people.change_role(name, role, actor=actor()), as_json)


@users_app.command("reset-password")
def users_reset_password(
    name: str, password_stdin: PasswordStdin = False, as_json: JsonOpt = False
) -> None:
    """Set a new password (and lift a lock-out): their tokens and sessions stop."""
    with runtime() as rt:
        who = actor()
        password = _password(password_stdin, confirm=True, as_json=as_json)
        _shown(rt.services.people.reset_password(name, password, actor=who), as_json)


@users_app.command("list")
def users_list(as_json: JsonOpt = False) -> None:
    """Everyone who may sign in: name, role, status, locked or not."""
    with runtime() as rt:
        users = rt.services.people.list(actor=actor())
    if as_json:
        emit({"users": [u.model_dump(mode="json") for u in users], "total": len(users)})
        return
    table = Table("name", "role", "status", "locked", "since", title=f"Users ({len(users)})")
    for u in users:
        table.add_row(
            u.name, u.role, u.status, "yes" if u.locked else "no", u.created_at.date().isoformat()
        )
    console.print(table)


@users_app.command("token")
def users_token(name: str, as_json: JsonOpt = False) -> None:
    """Issue an API token for a person (shown this once; idv keeps only its hash). It acts
    with the person's role until revoked, the person disabled or their role changed."""
    with runtime() as rt:
        issued = rt.services.people.issue_api_token(name, actor=actor())
    token = issued.token.get_secret_value()
    if as_json:
        emit({"user": issued.user, "kind": issued.kind, "token": token})
    else:
        sys.stdout.write(token + "\n")
        errors.print(
            "shown once: keep it in a secret store; use it as `Authorization: "
            "Bearer <token>` or IDV_TOKEN"
        )


@app.command()
def login(name: str, password_stdin: PasswordStdin = False, as_json: JsonOpt = False) -> None:
    """Sign in: a short-lived token is kept in $IDV_HOME/session.token (mode 0600) for the
    commands that follow, until it expires or `idv logout`."""
    password = _password(password_stdin, confirm=False, as_json=as_json)
    with runtime() as rt:
        issued = rt.services.people.sign_in(name, password, kind="cli")
        path = token_file()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = path.with_suffix(".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(issued.token.get_secret_value())
        os.chmod(partial, 0o600)
        os.replace(partial, path)
    data = {
        "user": issued.user,
        "expires_at": issued.expires_at.isoformat() if issued.expires_at else None,
    }
    if as_json:
        emit(data)
    else:
        console.print(f"signed in as {issued.user} until {data['expires_at']}")


@app.command()
def logout(as_json: JsonOpt = False) -> None:
    """Sign out: the stored token is revoked and removed."""
    path = token_file()
    token = path.read_text(encoding="utf-8").strip() if path.exists() else ""
    if token:
        with runtime() as rt:
            rt.services.people.sign_out(token)
    path.unlink(missing_ok=True)
    if as_json:
        emit({"signed_out": bool(token)})
    else:
        console.print("signed out" if token else "nobody was signed in")


@app.command()
def whoami(as_json: JsonOpt = False) -> None:
    """Who the commands act as: the signed-in user and their role."""
    who = actor()
    via = "IDV_TOKEN" if os.environ.get("IDV_TOKEN", "").strip() else "idv login"
    if as_json:
        emit({"user": who.name, "role": who.role, "via": via})
    else:
        console.print(f"{who.name} ({who.role}, via {via})")
