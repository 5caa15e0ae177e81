"""What a service refuses, and why: a field and the rule it broke, never the value.

Surfaces map the kind to their own vocabulary: the command line exits 2 for each, the HTTP
API answers 422, 404, 403, 409 or 503, or the status and code a refusal carries when it
relays another party's answer (`services.oauth.OAuthFailure`: a provider's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pydantic is imported by whoever raises one, not by every surface
    from pydantic import ValidationError

Kind = Literal["invalid", "not_found", "denied", "conflict", "unavailable"]


class ServiceError(Exception):
    """A refusal a caller can act on. `str()` is `field: rule`."""

    kind: Kind = "invalid"
    # Set by a refusal that relays another party's answer (an OAuth provider's): the code
    # for machines and the HTTP status it calls for, which an HTTP surface answers with
    # instead of the kind's.
    code: str | None = None
    status: int | None = None

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class InvalidInput(ServiceError):
    kind: Kind = "invalid"


class NotFound(ServiceError):
    kind: Kind = "not_found"


class Denied(ServiceError):
    kind: Kind = "denied"


class Conflict(ServiceError):
    kind: Kind = "conflict"


class Unavailable(ServiceError):
    kind: Kind = "unavailable"


def field_of(loc: tuple[object, ...]) -> str:
    """A pydantic error location as a dotted field name (`consents.0.scopes`)."""
    parts = [str(p) for p in loc if p not in ("body", "path", "query")]
    return ".".join(parts) or "request"


def from_validation(exc: ValidationError, *, prefix: str = "") -> InvalidInput:
    """The first error of a pydantic validation, without the input it was given."""
    errors = exc.errors(include_input=False, include_url=False)
    err = errors[0] if errors else {"loc": (), "msg": "is invalid"}
    field = field_of(tuple(err.get("loc", ())))
    return InvalidInput(f"{prefix}{field}" if prefix else field, str(err.get("msg", "is invalid")))


def environment_failure(exc: BaseException) -> tuple[str, str] | None:
    """A failure of the environment a user can cause or fix (a read-only `IDV_HOME`, a policy
    that does not validate, a production setting missing), as (field, rule) without values;
    None for anything else (an internal error, to be named by its type only)."""
    import errno
    import os
    from pathlib import Path

    from pydantic import ValidationError
    from sqlalchemy.exc import DBAPIError

    from policies.document import PolicyError
    from storage.audit import ChainRolledBackError
    from storage.keyring import KeyRingError

    if isinstance(exc, ValidationError) and exc.title == "Settings":
        # An `IDV_*` variable the settings refuse: named, with the rule, never the value.
        errors = exc.errors(include_input=False, include_url=False)
        err = errors[0] if errors else {"loc": (), "msg": "is invalid"}
        loc = err.get("loc", ())
        name = str(loc[0]).upper() if loc else "SETTINGS"
        msg = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
        return f"IDV_{name}", msg
    if isinstance(exc, PolicyError):
        return "policy", f"refused: {exc}"
    if isinstance(exc, KeyRingError):
        return "keys", str(exc)
    if isinstance(exc, ChainRolledBackError):  # no run starts: nothing is paid for on it
        return "audit_chain", f"{exc.rule}; run `idv audit verify`"
    if isinstance(exc, DBAPIError):
        text = str(exc.orig).lower()
        if "readonly" in text or "read-only" in text:
            return "IDV_HOME", "is read-only: the database cannot be written"
        if "unable to open" in text:
            return "IDV_HOME", "the database file cannot be opened or created"
        return "IDV_DATABASE_URL", f"the database refused ({type(exc.orig).__name__})"
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        where = Path(str(exc.filename)).name if exc.filename else "a file"
        return "IDV_HOME", f"cannot be written ({where}: {os.strerror(exc.errno)})"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "IDV_HOME", "no space left on the device"
    return None
