"""The WeChat Mini Program's phone-number exchange: a paid call, under the applicant's own
sensitive `wechat_phone` consent (PIPL Art. 29).

The Mini Program's phone button hands the lender's page a one-time code (single use, five
minutes); we trade it at `POST /wxa/business/getuserphonenumber`, authenticated by the Mini
Program's client-credential access token (`GET /cgi-bin/token`), for the phone bound to the
WeChat account. WeChat answers errors on HTTP 200 as `errcode` / `errmsg` (DOMAIN.md).

The code is an input of one call: construct a `WeChatPhoneVerifier` per exchange, with the
code, and hand it to the gate. The bound phone goes straight to the injected `PhoneBinder`
(the store keeps a blind index of it) under the permit's consent; the evidence carries only
its mask.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Annotated, Any, ClassVar, Protocol

import aiohttp
import orjson
from pydantic import BeforeValidator, Field, SecretStr, StringConstraints

from policies.masking import mask_phone
from verifiers.base import ConsentPermit, Evidence, StepStatus, Subject
from verifiers.vendor import VendorAnswer

PHONE_PATH = "/wxa/business/getuserphonenumber"
CLIENT_CREDENTIAL_PATH = "/cgi-bin/token"
# Errcodes that refuse the applicant's code itself: the exchange `failed`; any other errcode
# is WeChat refusing us, an `error`. WeChat documents 40029 for a phone code that is unknown,
# expired or used; 40163 (its OAuth codes' "code been used") and 41008 (missing) likewise.
CODE_REFUSED = frozenset({40029, 40163, 41008})
# Fetch a new client token this long before WeChat says the old one expires.
TOKEN_MARGIN = timedelta(seconds=300)


class WeChatStatus(VendorAnswer):
    """Every WeChat answer: `errcode` 0 (or absent) for success."""

    errcode: int = 0


class ClientToken(VendorAnswer):
    """`GET /cgi-bin/token`: the Mini Program's own access token (7,200 s)."""

    access_token: str
    expires_in: int


def _number_as_text(value: object) -> object:
    """A JSON number given where WeChat documents a string of digits, as that string."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


class PhoneInfo(VendorAnswer):
    """The bound phone. `purePhoneNumber` never has the country code, `countryCode` holds it
    (documented as a string, shown as the number 86 in WeChat's own example: both are
    read); `phoneNumber` has it only outside the mainland, so it is not read."""

    # Digits only, at most E.164's 15; a country code is 1 to 3 digits (ITU-T E.164).
    purePhoneNumber: Annotated[str, StringConstraints(pattern=r"^\d{4,15}$"), Field(repr=False)]
    countryCode: Annotated[
        str, BeforeValidator(_number_as_text), StringConstraints(pattern=r"^\d{1,3}$")
    ]

    def e164(self) -> str:
        """The number with its country code (`+8613800138000`): a foreign number is never
        taken for a mainland one with the same digits."""
        return f"+{self.countryCode}{self.purePhoneNumber}"


class PhoneAnswer(VendorAnswer):
    """`POST /wxa/business/getuserphonenumber`."""

    phone_info: PhoneInfo


@dataclass(frozen=True)
class WeChatRefusal:
    """Why a WeChat call gave no answer: the step's status and reason, and WeChat's errcode
    when it answered with one."""

    status: StepStatus
    reason: str
    errcode: int | None = None


class MiniProgram:
    """One Mini Program's credentials and where WeChat is. Construct one per process: it
    keeps the client-credential token between exchanges (WeChat limits how often one may be
    fetched)."""

    def __init__(
        self, *, api_url: str, appid: str, secret: SecretStr, timeout_s: float = 10.0
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.appid = appid
        self._secret = secret
        self.timeout_s = timeout_s
        self._token: tuple[str, datetime] | None = None

    async def client_token(self, session: aiohttp.ClientSession) -> str | WeChatRefusal:
        now = datetime.now(UTC)
        if self._token is not None and self._token[1] > now:
            return self._token[0]
        answer = await _call(
            session,
            "GET",
            self.api_url + CLIENT_CREDENTIAL_PATH,
            self.timeout_s,
            params={
                "grant_type": "client_credential",
                "appid": self.appid,
                "secret": self._secret.get_secret_value(),
            },
        )
        if isinstance(answer, WeChatRefusal):
            return answer
        token = ClientToken.parse(answer)
        if token is None:
            return WeChatRefusal(StepStatus.ERROR, "vendor_malformed")
        self._token = (
            token.access_token,
            now + max(timedelta(0), timedelta(seconds=token.expires_in) - TOKEN_MARGIN),
        )
        return token.access_token


async def _call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    timeout_s: float,
    *,
    params: dict[str, str],
    body: dict[str, str] | None = None,
) -> dict[str, Any] | WeChatRefusal:
    """One WeChat call, redirects never followed (the query carries secrets): its answer
    once its errcode is 0, else the refusal."""
    headers = {"Content-Type": "application/json"} if body is not None else None
    try:
        async with session.request(
            method,
            url,
            params=params,
            data=orjson.dumps(body) if body is not None else None,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            raw = await resp.read()
    except TimeoutError:
        return WeChatRefusal(StepStatus.ERROR, "timeout")
    except aiohttp.ClientError as exc:
        return WeChatRefusal(StepStatus.ERROR, f"connection_{type(exc).__name__}")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return WeChatRefusal(StepStatus.ERROR, "vendor_malformed")
    if not isinstance(parsed, dict):
        return WeChatRefusal(StepStatus.ERROR, "vendor_malformed")
    answer: dict[str, Any] = parsed
    status = WeChatStatus.parse(answer)
    if status is None:
        return WeChatRefusal(StepStatus.ERROR, "vendor_malformed")
    if status.errcode:
        refused = StepStatus.FAILED if status.errcode in CODE_REFUSED else StepStatus.ERROR
        return WeChatRefusal(refused, "wechat_errcode", status.errcode)
    return answer


class PhoneBinder(Protocol):
    """Keeps the phone bound to an applicant's account (the storage room implements it, as a
    blind index only)."""

    def set_bound_phone(
        self, applicant_ref: str, provider: str, phone: str, *, consent_id: str
    ) -> None: ...


class WeChatPhoneVerifier:
    """One phone exchange. `passed` once the phone is bound (signal `bound_phone`: its
    mask); a refused code is `failed` and any other refusal `error`, both with reason
    `wechat_errcode` and the errcode as `result_code`; no answer is `error` (timeout,
    connection_*, vendor_malformed). The subject's personal values are not read: only its
    reference."""

    name: ClassVar[str] = "wechat_phone"
    purpose: ClassVar[str] = "onboarding_verification"
    scopes: ClassVar[frozenset[str]] = frozenset({"wechat_phone"})
    provider: ClassVar[str] = "wechat"

    def __init__(
        self,
        program: MiniProgram,
        session: aiohttp.ClientSession,
        *,
        code: SecretStr,
        binder: PhoneBinder,
    ) -> None:
        self._program = program
        self._session = session
        self._code = code
        self._binder = binder

    async def verify(self, subject: Subject, permit: ConsentPermit) -> Evidence:
        token = await self._program.client_token(self._session)
        if isinstance(token, WeChatRefusal):  # the paid call was never made
            return Evidence(
                verifier=self.name,
                consent_id=permit.consent_id,
                status=token.status,
                reason=token.reason,
                result_code=None if token.errcode is None else str(token.errcode),
            )
        answer = await _call(
            self._session,
            "POST",
            self._program.api_url + PHONE_PATH,
            self._program.timeout_s,
            params={"access_token": token},
            body={"code": self._code.get_secret_value()},
        )
        evidence = partial(Evidence, verifier=self.name, consent_id=permit.consent_id, attempts=1)
        if isinstance(answer, WeChatRefusal):
            return evidence(
                status=answer.status,
                reason=answer.reason,
                result_code=None if answer.errcode is None else str(answer.errcode),
            )
        phone = PhoneAnswer.parse(answer)
        if phone is None:
            return evidence(status=StepStatus.ERROR, reason="vendor_malformed")
        bound = phone.phone_info.e164()
        await asyncio.to_thread(
            self._binder.set_bound_phone,
            subject.applicant_ref,
            self.provider,
            bound,
            consent_id=permit.consent_id,
        )
        return evidence(
            status=StepStatus.PASSED,
            reason="PHONE_BOUND",
            signals={"bound_phone": mask_phone(bound)},
        )
