"""A vendor's wire protocol: how one call to one of its actions is signed and sent, and how
its answer is read. One implementation per protocol a licensed vendor speaks:

- `verifiers.tencent.TencentWire`: Tencent Cloud API 3.0 (TC3-HMAC-SHA256, `POST /` with
  the `X-TC-Action` header, `{"Response": {...}}` answers);
- `verifiers.aliyun.AliyunWire`: Alibaba Cloud's OpenAPI (ACS3-HMAC-SHA256, `POST /` with
  the `x-acs-action` header, `{"Code", "Message", "RequestId", "ResultObject"}` answers);
- `verifiers.generic.GenericWire`: the generic adapter a lender maps its own court-list or
  credit-bureau vendor onto (a JSON path per action, our HMAC signature, an idempotency key).

The client (`verifiers.vendor.VendorClient`) owns the HTTP session, the timeouts, the
retries, the breaker and the rate; a wire is pure: no I/O, no clock of its own (the time
and nonce are given), so a signature can be compared with the one an SDK computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Credentials:
    """An account's key pair at a vendor (Tencent: SecretId/SecretKey; Aliyun:
    AccessKeyId/AccessKeySecret; generic: app key/secret), and its region when the
    vendor has one."""

    key_id: str
    secret: str
    region: str | None = None


@dataclass(frozen=True)
class WireRequest:
    """One signed request, ready to send: `path` is the URL's path and query, relative to
    the vendor's base URL."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class WireAnswer:
    """What a vendor's answer says, read by its protocol.

    - `fields`: the action's own answer fields, named as the vendor names them (Tencent:
      the `Response` object without `RequestId`; Aliyun: the `ResultObject`), or {} for an
      error;
    - `request_id`: the vendor's id of the call (on its bill), when it gave one;
    - `error`: the vendor's error code (`AuthFailure.SignatureFailure`,
      `RequestLimitExceeded`, `Throttling.User`, `InvalidParameter`...), None on success;
    - `malformed`: the first field the protocol requires and did not find (the envelope),
      None when the envelope is as documented. Never a value.
    """

    fields: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    error: str | None = None
    malformed: str | None = None


class Wire(Protocol):
    """A vendor protocol. `name` is the protocol's name in `policies/vendors.yaml`
    (`tencent`, `aliyun`, `generic`)."""

    @property
    def name(self) -> str: ...

    def request(
        self,
        action: str,
        params: dict[str, Any],
        credentials: Credentials,
        *,
        host: str,
        now: float,
        nonce: str,
    ) -> WireRequest:
        """The signed request for `action` with `params` (named as the vendor names them),
        at time `now` (Unix seconds) with `nonce` (used where the protocol has one)."""
        ...

    def read(self, action: str, status: int, body: bytes) -> WireAnswer:
        """The answer of an HTTP reply with `status` and `body` (the body is never kept)."""
        ...

    def transient(self, error: str) -> bool:
        """Whether an error code means "not done, not billed, try again later" (a rate
        limit, a throttle, a busy source): the client retries those with backoff."""
        ...
