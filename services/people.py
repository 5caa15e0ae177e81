"""People and how they sign in: users with a role, argon2 password hashes, lock-out after
repeated failures, and the credentials a signed-in person presents (per-user API tokens,
short-lived command-line tokens, web sessions).

A credential is a random secret of 32 bytes shown once; only its SHA-256 is stored (a
secret that random needs no slow hash). Each carries the role it was issued under: when
the user is disabled or their role changes, their next request is refused. Every sign-in,
failure, lock-out, issue and revocation is in the audit chain; passwords and secrets never
are.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, SecretStr

from policies.access import AccessPolicy, lockout_until
from policies.vocabulary import check_user_name
from services.access import AccessControl
from services.context import Actor
from services.errors import Conflict, Denied, InvalidInput, NotFound
from services.oauth_config import OAuthConfig
from services.throttle import SignInThrottle, SignInThrottled
from storage.people import UserExistsError
from storage.records import CredentialRecord, UserRecord

if TYPE_CHECKING:  # the OIDC client (and its HTTP stack) load for an OIDC sign-in only
    from services.oauth import OidcClient
    from storage.store import Store

# A user's name: lower-case letters, digits and `_ . @ -`, so that an e-mail address or a
# directory login may serve, and a name reads the same in every audit event.

# Every secret we issue: a prefix that says what it is (secret scanners key on it) and 32
# random bytes, base64url.
TOKEN_PREFIX = "idv_"  # noqa: S105 - a prefix, not a secret
TOKEN_BYTES = 32
MAX_PASSWORD_CHARS = 1024  # argon2 takes any length; a bound keeps a sign-in cheap to refuse
Kind = Literal["api", "cli", "web"]


# The one answer to a refused sign-in, whatever the reason (audited apart).
REFUSED = "wrong name or password, or the account is locked or disabled"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


class SignInRefused(Denied):
    """No credential, or one that does not (or no longer) stand: surfaces answer 401 or
    send the person to sign in."""


class UserView(BaseModel):
    """A user as surfaces show them: no hash, no secret."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    role: str
    status: str
    locked: bool
    created_at: datetime
    updated_at: datetime


class IssuedToken(BaseModel):
    """A credential just issued: the secret, shown this once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str
    kind: str
    token: SecretStr
    expires_at: datetime | None


@dataclass(frozen=True)
class SignedIn:
    """Who presented a credential that stands: the actor for services and the credential."""

    actor: Actor
    user: str
    credential_id: str
    kind: str
    created_at: datetime


class PeopleService:
    def __init__(
        self,
        store: Store,
        policy: AccessPolicy,
        hasher: PasswordHasher | None = None,
        *,
        control: AccessControl | None = None,
        throttle: SignInThrottle | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.access = control or AccessControl(store, policy)
        self.throttle = throttle or SignInThrottle(policy.sign_in)
        # argon2id with argon2-cffi's defaults (RFC 9106's low-memory profile: t=3,
        # 64 MiB, p=4).
        self.hasher = hasher or PasswordHasher()
        # Bound once: `verify` is the verifiers' verb, which only the consent gate calls
        # (tests/contract/test_architecture.py reads the code for it).
        self._matches = self.hasher.verify
        # Verified against when the name is unknown, so that an unknown name costs what a
        # wrong password does and timing tells nobody which names exist. Made at the first
        # sign-in, before the name is looked up (so known and unknown names pay for it
        # alike), not here: a command that only presents a token never hashes.
        self._dummy: str | None = None

    # --- checks -----------------------------------------------------------------------------

    def _name(self, name: str) -> str:
        rule = check_user_name(name)
        if rule is not None:
            raise InvalidInput("name", rule)
        return name

    def _role(self, role: str) -> str:
        if role not in self.policy.roles:
            raise InvalidInput("role", f"must be one of {', '.join(sorted(self.policy.roles))}")
        return role

    def _password(self, password: SecretStr, *, name: str) -> str:
        """A new password's hash, once it is long and strong enough: zxcvbn's estimate
        (its lists of common passwords, names and words, keyboard runs, sequences, dates,
        the user's own name) must reach `sign_in.password_min_strength`."""
        from zxcvbn import zxcvbn

        value = password.get_secret_value()
        rule = self.policy.sign_in
        if len(value) < rule.password_min_chars:
            raise InvalidInput("password", f"must be at least {rule.password_min_chars} characters")
        if len(value) > MAX_PASSWORD_CHARS:
            raise InvalidInput("password", f"must be at most {MAX_PASSWORD_CHARS} characters")
        if len(set(value)) < 4:
            raise InvalidInput("password", "must not be a few characters repeated")
        # The estimate reads at most 100 characters: past that it is slow and no weaker.
        if zxcvbn(value[:100], user_inputs=[name, "idv"])["score"] < rule.password_min_strength:
            raise InvalidInput(
                "password",
                "is too easy to guess (a common password, a "
                "sequence, a name or a word with digits): use a longer phrase",
            )
        return self.hasher.hash(value)

    def _user(self, name: str) -> UserRecord:
        user = self.store.people.get(name)
        if user is None:
            raise NotFound("user", "no such user")
        return user

    def _view(self, user: UserRecord) -> UserView:
        now = self.store.clock()
        return UserView(
            name=user.name,
            role=user.role,
            status=user.status,
            locked=user.locked_until is not None and user.locked_until > now,
            created_at=user.created_at,
            updated_at=user.updated_at,
        )

    # --- users ------------------------------------------------------------------------------

    def any_user(self) -> bool:
        return self.store.people.count() > 0

    def add(
        self, name: str, role: str, password: SecretStr | None, *, actor: Actor | None
    ) -> UserView:
        """Add a user. `actor` None is the first user, allowed only while nobody exists; a
        later one needs `users`. `password` None: the user signs in through OpenID Connect
        only."""
        self._name(name)
        self._role(role)
        hashed = self._password(password, name=name) if password is not None else None
        try:
            if actor is None:
                try:
                    user = self.store.people.add(name, role, hashed, actor=name, only_if_none=True)
                except PermissionError:
                    raise SignInRefused(
                        "user",
                        "people exist already: sign in (`idv login`) "
                        "as a user with the 'users' permission",
                    ) from None
            else:
                self.access.require(actor, "users", operation="users.add")
                user = self.store.people.add(name, role, hashed, actor=actor.name)
        except UserExistsError:
            raise Conflict("name", "a user of that name exists") from None
        return self._view(user)

    def list(self, *, actor: Actor) -> list[UserView]:
        self.access.require(actor, "users", operation="users.list")
        return [self._view(u) for u in self.store.people.all()]

    def disable(self, name: str, *, actor: Actor) -> UserView:
        """Disable a user: every credential they hold stops at once."""
        self.access.require(actor, "users", operation="users.disable")
        self._user(self._name(name))
        return self._view(
            self.store.people.change(
                name, kind="user.disabled", actor=actor.name, status="disabled"
            )
        )

    def enable(self, name: str, *, actor: Actor) -> UserView:
        self.access.require(actor, "users", operation="users.enable")
        self._user(self._name(name))
        return self._view(
            self.store.people.change(
                name,
                kind="user.enabled",
                actor=actor.name,
                status="active",
                failed_count=0,
                locked_until=None,
            )
        )

    def unlock(self, name: str, *, actor: Actor) -> UserView:
        """Lift a lock-out (and the failures in a row) before its time; the user's
        credentials stand."""
        self.access.require(actor, "users", operation="users.unlock")
        self._user(self._name(name))
        return self._view(
            self.store.people.change(
                name,
                kind="user.unlocked",
                actor=actor.name,
                revoke=False,
                failed_count=0,
                locked_until=None,
            )
        )

    def change_role(self, name: str, role: str, *, actor: Actor) -> UserView:
        """A new role: every credential issued under the old one stops."""
        self.access.require(actor, "users", operation="users.change_role")
        self._user(self._name(name))
        self._role(role)
        return self._view(
            self.store.people.change(name, kind="user.role_changed", actor=actor.name, role=role)
        )

    def reset_password(self, name: str, password: SecretStr, *, actor: Actor) -> UserView:
        """A new password (and the lock lifted): every credential the user holds stops."""
        self.access.require(actor, "users", operation="users.reset_password")
        self._user(self._name(name))
        hashed = self._password(password, name=name)
        return self._view(
            self.store.people.change(
                name,
                kind="user.password_reset",
                actor=actor.name,
                password_hash=hashed,
                failed_count=0,
                locked_until=None,
            )
        )

    # --- signing in -------------------------------------------------------------------------

    def authenticate(
        self, name: str, password: SecretStr, *, channel: str, client: str | None = None
    ) -> UserRecord:
        """The user whose name and password these are, or `SignInRefused` (audited: an
        unknown name, a wrong password, a disabled or locked account; repeated failures
        lock the account for the policy's minutes). Every refusal gives the same answer
        after the same work (one password hash checked), so that neither the answer nor
        its time tells which names exist or are locked. `client` (the web client's address;
        the command line's `cli`) is throttled: past the policy's failures, from it or from
        everyone, `SignInThrottled` before anything is checked."""
        client = client or channel
        try:
            self.throttle.check(client)
        except SignInThrottled:
            # The client by a keyed digest: an address is personal data, and a plain hash of
            # an IPv4 address is undone by trying them all.
            tag = self.store.cipher.blind_index(client, table="sign_in", column="client")[:16]
            self.store.audit.record(
                "user.sign_in_throttled", None, {"channel": channel, "client": tag}
            )
            raise
        rule = self.policy.sign_in
        value = password.get_secret_value()[:MAX_PASSWORD_CHARS]
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        user = self.store.people.get(name) if check_user_name(name) is None else None
        now = self.store.clock()
        why: str | None = None
        locked_until = None
        if user is None or user.password_hash is None:
            self._verify(self._dummy, value)
            why = "unknown_user" if user is None else "no_password"
        elif user.locked_until is not None and user.locked_until > now:
            self._verify(self._dummy, value)
            why = "locked"
        elif not self._verify(user.password_hash.get_secret_value(), value):
            why = "wrong_password"
            locked_until = lockout_until(rule, user.failed_count + 1, now)
        elif user.status != "active":
            why = "disabled"
        if why is not None:
            self.throttle.failed(client)
            self.store.people.sign_in_failed(
                name if user else "-", locked_until=locked_until, why=why, channel=channel
            )
            raise SignInRefused("credentials", REFUSED)
        assert user is not None and user.password_hash is not None  # noqa: S101 - by the above
        if self.hasher.check_needs_rehash(user.password_hash.get_secret_value()):
            self.store.people.change(
                name,
                kind="user.password_rehashed",
                actor=name,
                revoke=False,
                password_hash=self.hasher.hash(value),
            )
        self.store.people.signed_in(name, channel=channel)
        return user

    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return self._matches(hashed, password)
        except (VerificationError, InvalidHashError):
            return False

    def user_for_sign_in(self, name: str, *, channel: str) -> UserRecord:
        """The user an external identity (OpenID Connect) names, if they may sign in;
        `SignInRefused` (audited) for nobody of that name or a disabled user."""
        user = self.store.people.get(name) if check_user_name(name) is None else None
        if user is None or user.status != "active":
            self.store.people.sign_in_failed(
                name if user else "-",
                locked_until=None,
                why="unknown_user" if user is None else "disabled",
                channel=channel,
            )
            raise SignInRefused("credentials", "no active user for that identity")
        self.store.people.signed_in(name, channel=channel)
        return user

    def _issue(self, user: UserRecord, kind: Kind, minutes: int | None, actor: str) -> IssuedToken:
        token = new_token()
        now = self.store.clock()
        expires = now + timedelta(minutes=minutes) if minutes is not None else None
        self.store.people.issue(
            user, kind=kind, digest=digest(token), expires_at=expires, actor=actor
        )
        return IssuedToken(user=user.name, kind=kind, token=SecretStr(token), expires_at=expires)

    def sign_in(
        self,
        name: str,
        password: SecretStr,
        *,
        kind: Literal["cli", "web"],
        client: str | None = None,
    ) -> IssuedToken:
        """Sign in with a password: a command-line token (`cli_token_minutes`) or a web
        session (its lifetimes are checked at each request)."""
        user = self.authenticate(name, password, channel=kind, client=client)
        return self.session_for(user, kind=kind)

    def session_for(self, user: UserRecord, *, kind: Literal["cli", "web"]) -> IssuedToken:
        rule = self.policy.sign_in
        minutes = rule.cli_token_minutes if kind == "cli" else rule.session_absolute_minutes
        return self._issue(user, kind, minutes, actor=user.name)

    def issue_api_token(self, name: str, *, actor: Actor) -> IssuedToken:
        """A per-user API token (no expiry; it stops when revoked, when the user is disabled
        or when their role changes). Needs `users`."""
        self.access.require(actor, "users", operation="users.token")
        user = self._user(self._name(name))
        if user.status != "active":
            raise Conflict("user", "is disabled")
        return self._issue(user, "api", None, actor=actor.name)

    def resolve(self, token: str, *, kinds: tuple[Kind, ...]) -> SignedIn:
        """Who a presented secret belongs to, or `SignInRefused`: unknown, revoked, expired,
        idle too long (web), of another kind, the user disabled or their role changed (the
        credential is then revoked, audited)."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            raise SignInRefused("credential", "is not a token idv issued")
        found = self.store.people.find(digest(token))
        if found is None:
            raise SignInRefused("credential", "is unknown")
        cred, user = found
        if cred.kind not in kinds:
            raise SignInRefused("credential", "is not valid here")
        if cred.revoked_at is not None:
            # A real credential presented after it stopped (signed out, its user disabled):
            # audited with whose it is. An unknown token is not (nobody to name).
            self.store.audit.record(
                "credential.refused",
                None,
                {
                    "user": user.name,
                    "role": user.role,
                    "kind": cred.kind,
                    "credential": cred.credential_id,
                    "rule": "revoked",
                },
            )
            raise SignInRefused("credential", "was revoked or signed out: sign in again")
        why = self._stale(cred, user)
        if why is not None:
            self.store.people.revoke(cred.credential_id, why=why)
            raise SignInRefused(
                "credential",
                {
                    "expired": "has expired: sign in again",
                    "idle": "was idle too long: sign in again",
                    "disabled": "belongs to a disabled user",
                    "role_changed": "was issued under another role: sign in again",
                }[why],
            )
        self.store.people.seen(cred.credential_id)
        return SignedIn(
            actor=Actor(name=user.name, role=user.role),
            user=user.name,
            credential_id=cred.credential_id,
            kind=cred.kind,
            created_at=cred.created_at,
        )

    def _stale(self, cred: CredentialRecord, user: UserRecord) -> str | None:
        now = self.store.clock()
        if user.status != "active":
            return "disabled"
        if user.role != cred.role:
            return "role_changed"
        if cred.expires_at is not None and cred.expires_at <= now:
            return "expired"
        idle = timedelta(minutes=self.policy.sign_in.session_idle_minutes)
        if cred.kind == "web" and now - cred.last_seen_at > idle:
            return "idle"
        return None

    def sign_out(self, token: str) -> None:
        """Revoke the presented credential, if it is one (signing out twice is harmless)."""
        found = self.store.people.find(digest(token)) if token.startswith(TOKEN_PREFIX) else None
        if found is not None:
            self.store.people.revoke(found[0].credential_id, why="signed_out")

    # --- forms ------------------------------------------------------------------------------

    def form_token(self, seed: str, session: str | None) -> str:
        """The anti-forgery token of a page's forms: a keyed MAC (a ring secret of its own)
        over the browser's random seed cookie and its session, so that another site can
        neither read nor make it (signed double-submit)."""
        key = self.store.keyring.secret("web-forms")
        message = f"{seed}|{digest(session) if session else '-'}".encode()
        return hmac.new(key, message, hashlib.sha256).hexdigest()

    def form_token_matches(self, given: str | None, seed: str | None, session: str | None) -> bool:
        if not given or not seed:
            return False
        return hmac.compare_digest(given.encode(), self.form_token(seed, session).encode())

    # --- single sign-on ---------------------------------------------------------------------

    def _seal(self, data: dict[str, object]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(data, sort_keys=True).encode()).decode()
        key = self.store.keyring.secret("web-sign-in")
        return body + "." + hmac.new(key, body.encode(), hashlib.sha256).hexdigest()

    def _unseal(self, sealed: str | None) -> dict[str, object] | None:
        body, _, mac = (sealed or "").partition(".")
        key = self.store.keyring.secret("web-sign-in")
        good = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
        if not body or not hmac.compare_digest(mac.encode(), good.encode()):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body))
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def oidc_start(self, client: OidcClient, *, ttl_s: int = 600) -> tuple[str, str]:
        """The provider's authorization URL for a person to sign in, and what the browser
        keeps until the callback (state, nonce, PKCE verifier, expiry), sealed by a ring
        secret so it cannot be altered."""
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        url = client.authorize_url(state=state, nonce=nonce, verifier=verifier)
        expires = int(self.store.clock().timestamp()) + ttl_s
        return url, self._seal(
            {
                "state": state,
                "nonce": nonce,
                "verifier": verifier,
                "exp": expires,
                "provider": client.name,
            }
        )

    def oidc_finish(
        self, client: OidcClient, sealed: str | None, params: dict[str, str], *, claim: str
    ) -> IssuedToken:
        """The provider's answer: the state checked, the code exchanged with the verifier, the
        ID token validated (signature, issuer, audience, expiry, nonce), and the person its
        `claim` names (lower-case, as user names are) signed in with a new web session.
        `SignInRefused` (audited) for anything else."""
        pending = self._unseal(sealed)
        now = int(self.store.clock().timestamp())
        if (
            pending is None
            or pending.get("provider") != client.name
            or not isinstance(pending.get("exp"), int)
            or int(pending["exp"]) < now
            or not params.get("state")
            or not hmac.compare_digest(str(pending.get("state")), params["state"])
        ):
            self.store.people.sign_in_failed(
                "-", locked_until=None, why="oidc_state", channel="oidc"
            )
            raise SignInRefused(
                "state", "the sign-in was not started here or has expired: start again"
            )
        if params.get("error") or not params.get("code"):
            self.store.people.sign_in_failed(
                "-", locked_until=None, why="oidc_declined", channel="oidc"
            )
            raise SignInRefused("credentials", "the provider declined the sign-in")
        try:
            token = client.exchange(params["code"], str(pending["verifier"]))
            claims = client.id_claims(token["id_token"], nonce=str(pending["nonce"]))
            value = claims.get(claim)
            if value is None:
                info = client.userinfo(token)
                value = info.get(claim) if info.get("sub") == claims["sub"] else None
        except _oauth_failure() as failure:
            self.store.people.sign_in_failed(
                "-", locked_until=None, why=failure.code, channel="oidc"
            )
            raise SignInRefused("credentials", "the provider's answer did not validate") from None
        if not isinstance(value, str):
            self.store.people.sign_in_failed(
                "-", locked_until=None, why="oidc_no_claim", channel="oidc"
            )
            raise SignInRefused("credentials", f"the provider's ID token has no {claim}")
        user = self.user_for_sign_in(value.strip().lower(), channel="oidc")
        return self.session_for(user, kind="web")


def _oauth_failure() -> type[Exception]:
    from services.oauth import OAuthFailure

    return OAuthFailure


def oidc_client(config: OAuthConfig, name: str, redirect_uri: str) -> OidcClient:
    """A client of the provider `name` (IDV_OIDC_PROVIDERS) for staff sign-in, answering at
    `redirect_uri` (the pages' callback, registered with the provider)."""
    from services.oauth import OidcClient

    conf = config.oidc_providers.get(name)
    if conf is None:
        raise NotFound("provider", "no OpenID Connect provider of that name is configured")
    return OidcClient(
        name, conf.model_copy(update={"redirect_uri": redirect_uri}), timeout_s=config.timeout_s
    )
