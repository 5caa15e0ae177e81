"""Face verification (`face_check`, scope `face_verification`): the vendors' hosted face flows,
which are not one call but a session.

1. **Start** (`FaceCheckVerifier`, a paid step under the gate, constructed per call: its return
   URL and token id are this call's): Tencent's `DetectAuth` or Aliyun's `InitFaceVerify` at
   the first vendor of the contracts' `face_check` route that answers (the fallback when the
   primary's breaker is open or its create call was not answered, nothing in doubt), after the
   person's caps (`verifiers.limits`: Tencent's same ID number 15 a minute, 30 a day). The
   vendor's token and page are kept on the verifier (`session`) for the caller; the evidence
   says `FACE_STARTED` with the call, never a value.
2. **The applicant** runs the vendor's H5 page and may come back on the return URL, or not.
3. **Pull** (`pull_result`): the verdict read server-side from the vendor by its token (never
   from the redirect): Tencent's `GetDetectInfoEnhanced` with `InfoType` "1" (text only, no
   picture asked for), Aliyun's `DescribeFaceVerify`. What each code means (outcome, reason,
   billed, `pending` while the flow is open) is the contracts' data; only the text results
   are read: the code, liveness and comparison statuses, the similarity, attack tags or the
   attack flag, the liveness mode, the device risk tags, the request id. The name, the ID
   number, OCR fields, locations and pictures in an answer are never read into anything.
4. **Delete** (`delete_result`): Aliyun's `DeleteFaceVerifyResult` (`DeleteAfterQuery` "Y")
   once the verdict is read; Tencent keeps nothing past its three days.

Every signal a face step carries is named `face_*` (`FACE_SIGNAL_PREFIX`): the scorecard refuses
any such feature (`policies.scorecard`), so a face result can pass or fail identity but never
feed a risk score (GB/T 41819).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from policies.vendors import ApiContract, VendorContracts
from verifiers import aliyun, tencent
from verifiers.base import ConsentPermit, Evidence, StepStatus, Subject
from verifiers.limits import Admission
from verifiers.metrics import record_vendor_call
from verifiers.vendor import VendorClient, VendorReply

STEP = "face_check"
SCOPE = "face_verification"
FACE_SIGNAL_PREFIX = "face_"
STARTED = "FACE_STARTED"
# Faults after which the start may go to the fallback: nothing was sent.
_NOT_SENT = frozenset({"circuit_open", "rate_wait_exceeded"})


@dataclass(frozen=True)
class FaceApis:
    """A protocol's face actions and windows (its wire's data)."""

    create: str
    pull: str
    delete: str | None
    token_ttl_s: int  # how long the flow may run
    result_ttl_s: int  # how long the vendor keeps the verdict


FACE_APIS: Mapping[str, FaceApis] = {
    "tencent": FaceApis(
        "DetectAuth",
        "GetDetectInfoEnhanced",
        None,
        tencent.FACE_TOKEN_TTL_S,
        tencent.FACE_RESULT_TTL_S,
    ),
    "aliyun": FaceApis(
        "InitFaceVerify",
        "DescribeFaceVerify",
        "DeleteFaceVerifyResult",
        aliyun.FACE_TOKEN_TTL_S,
        aliyun.FACE_RESULT_TTL_S,
    ),
}
# Aliyun answers some verdicts as the envelope's Code, not a SubCode: their meaning, by kind
# (`aliyun.FACE_SERVICE_ERRORS`).
_ALIYUN_CODE_VERDICTS: Mapping[str, tuple[StepStatus, str]] = {
    "source_unavailable": (StepStatus.ERROR, "FACE_SOURCE_UNAVAILABLE"),
    "daily_cap": (StepStatus.ERROR, "VENDOR_DAILY_LIMIT"),
    "policy_refused": (StepStatus.INCONCLUSIVE, "FACE_POLICY_REFUSED"),
}


def face_route_problems(contracts: VendorContracts) -> list[tuple[tuple[str, ...], str]]:
    """What keeps the contracts from serving the face step: (path in the file, rule). No route
    is no face step (a lender without one); a routed vendor speaks a protocol with a face
    flow, its flow's configuration is under `face`, and each of its face actions has a
    contract."""
    route = contracts.route(STEP)
    if route is None:
        return []
    out: list[tuple[tuple[str, ...], str]] = []
    for role, vendor in (("primary", route.primary), ("fallback", route.fallback)):
        if vendor is None:
            continue
        protocol = contracts.protocol(vendor) or ""
        apis = FACE_APIS.get(protocol)
        if apis is None:
            out.append((("steps", STEP, role), f"{vendor} speaks {protocol}: it has no face flow"))
            continue
        flow = contracts.face.get(vendor)
        needed = ("rule_id",) if protocol == "tencent" else ("scene_id", "product_code")
        if flow is None or any(getattr(flow, n) is None for n in needed):
            out.append((("face",), f"{vendor} needs {' and '.join(needed)} under face"))
        for api in (apis.create, apis.pull, apis.delete):
            if api is not None and contracts.api(vendor, api) is None:
                out.append((("vendors", vendor, "apis", api), "every face API needs a contract"))
    return out


@dataclass(frozen=True)
class FaceSession:
    """A flow the vendor started: where the applicant goes (`url`, the vendor's page: it
    holds the token, no personal value) and the token idv pulls the verdict by."""

    vendor: str
    protocol: str
    token: str
    url: str
    request_id: str | None
    token_ttl_s: int
    result_ttl_s: int


def with_query(url: str, **params: str) -> str:
    """`url` with `params` added to its query."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _call_note(
    vendor: str, action: str, code: str | None, reason: str, rid: str | None, fee: int, doubt: int
) -> dict[str, str | int | bool | None]:
    return {
        "vendor": vendor,
        "action": action,
        "code": code,
        "reason": reason,
        "request_id": rid,
        "fee_cents": fee,
        "in_doubt": doubt,
    }


class FaceCheckVerifier:
    """The start of a face flow (see the module). `clients`: the route's vendors, primary
    first; `return_url`: where the vendor sends the browser back (idv adds `face=<token_id>`,
    and Tencent its `token`); `token_id`: idv's name for this flow (Tencent echoes it as
    `Extra`, Aliyun takes it as `OuterOrderNo`); `meta_info`: the browser's environment from
    Aliyun's `getMetaInfo()`, without which Aliyun is not tried."""

    name: ClassVar[str] = STEP
    purpose: ClassVar[str] = "onboarding_verification"
    scopes: ClassVar[frozenset[str]] = frozenset({SCOPE})

    def __init__(
        self,
        clients: Sequence[VendorClient],
        contracts: VendorContracts,
        *,
        return_url: str,
        token_id: str,
        meta_info: str | None = None,
    ) -> None:
        self._clients = tuple(clients)
        self._contracts = contracts
        self._return_url = return_url
        self._token_id = token_id
        self._meta_info = meta_info
        self.session: FaceSession | None = None

    def _params(self, client: VendorClient, subject: Subject) -> dict[str, Any] | None:
        flow = self._contracts.face.get(client.name)
        back = with_query(self._return_url, face=self._token_id)
        name = subject.name.get_secret_value()
        number = subject.id_number.get_secret_value()
        if client.protocol == "tencent" and flow is not None and flow.rule_id:
            return {
                "RuleId": flow.rule_id,
                "IdCard": number,
                "Name": name,
                "RedirectUrl": back,
                "Extra": self._token_id,
            }
        if client.protocol == "aliyun" and flow is not None and flow.scene_id and self._meta_info:
            return {
                "SceneId": flow.scene_id,
                "OuterOrderNo": "".join(c for c in self._token_id if c.isalnum())[:32],
                "ProductCode": flow.product_code,
                "Model": flow.model or "LIVENESS",
                "CertType": "IDENTITY_CARD",
                "CertName": name,
                "CertNo": number,
                "ReturnUrl": back,
                "MetaInfo": self._meta_info,
            }
        return None

    async def verify(self, subject: Subject, permit: ConsentPermit) -> Evidence:
        calls: list[dict[str, str | int | bool | None]] = []
        attempts = doubt = 0
        reason = "no_face_vendor"
        for i, client in enumerate(self._clients):
            last = i == len(self._clients) - 1
            apis = FACE_APIS.get(client.protocol)
            params = self._params(client, subject)
            if apis is None or params is None:
                reason = "meta_info_missing" if client.protocol == "aliyun" else "no_face_flow"
                calls.append(_call_note(client.name, "", None, reason, None, 0, 0))
                continue
            if not last and await client.breaker_open():
                reason = "circuit_open"
                calls.append(_call_note(client.name, apis.create, None, reason, None, 0, 0))
                continue
            admission: Admission | None = None
            if client.limits is not None:
                admitted = await client.limits.admit(
                    client.api(apis.create),
                    {
                        "id_number": subject.id_number.get_secret_value(),
                        "name": subject.name.get_secret_value(),
                    },
                )
                if isinstance(admitted, str):  # capped: not sent, and not sent elsewhere
                    calls.append(_call_note(client.name, apis.create, None, admitted, None, 0, 0))
                    return self._evidence(permit, StepStatus.ERROR, admitted, calls, 0, 0, None)
                admission = admitted
            started = time.perf_counter()
            reply = await client.post(apis.create, params)
            attempts += reply.attempts
            doubt += reply.in_doubt
            session, reason = _started(client, apis, reply)
            rid = reply.answer.request_id if reply.answer is not None else None
            if reply.attempts:
                record_vendor_call(
                    client.name,
                    apis.create,
                    STARTED if session else reason,
                    billed=False,
                    seconds=time.perf_counter() - started,
                )
            if admission is not None and client.limits is not None:
                await client.limits.settle(admission, 0)
            calls.append(_call_note(client.name, apis.create, None, reason, rid, 0, reply.in_doubt))
            if session is not None:
                self.session = session
                return self._evidence(
                    permit,
                    StepStatus.INCONCLUSIVE,
                    STARTED,
                    calls,
                    attempts,
                    doubt,
                    client.name,
                    rid,
                )
            not_sent = reason in _NOT_SENT or (reply.in_doubt == 0 and reply.status is None)
            if not not_sent:
                break
        return self._evidence(permit, StepStatus.ERROR, reason, calls, attempts, doubt, None)

    def _evidence(
        self,
        permit: ConsentPermit,
        status: StepStatus,
        reason: str,
        calls: list[dict[str, str | int | bool | None]],
        attempts: int,
        doubt: int,
        vendor: str | None,
        request_id: str | None = None,
    ) -> Evidence:
        return Evidence(
            verifier=self.name,
            consent_id=permit.consent_id,
            status=status,
            reason=reason,
            vendor=vendor,
            vendor_request_id=request_id,
            attempts=attempts,
            in_doubt=doubt,
            calls=tuple(calls),
            signals={"face_vendor": vendor} if vendor else {},
        )


def _started(
    client: VendorClient, apis: FaceApis, reply: VendorReply
) -> tuple[FaceSession | None, str]:
    """The session a create call's answer started, or why none: the reply's fault, or the
    first documented field the answer lacks."""
    if reply.error is not None or reply.answer is None:
        return None, reply.error or "vendor_malformed"
    fields = reply.answer.fields
    if client.protocol == "tencent":
        token, url = fields.get("BizToken"), fields.get("Url")
        names = ("BizToken", "Url")
    else:
        token, url = fields.get("CertifyId"), fields.get("CertifyUrl")
        names = ("ResultObject.CertifyId", "ResultObject.CertifyUrl")
    for value, where in zip((token, url), names, strict=True):
        if not isinstance(value, str) or not value:
            return None, f"vendor_malformed:{where}"
    assert isinstance(token, str) and isinstance(url, str)
    return (
        FaceSession(
            vendor=client.name,
            protocol=client.protocol,
            token=token,
            url=url,
            request_id=reply.answer.request_id,
            token_ttl_s=apis.token_ttl_s,
            result_ttl_s=apis.result_ttl_s,
        ),
        STARTED,
    )


# ---------------------------------------------------------------------------------------------
# The pull and the deletion: vendor calls under the decision the gate recorded at the start
# (the caller holds it); neither is billed (the flow's verdict is, once: `FaceReading.fee_cents`).

ReadingState = Literal["final", "pending", "expired", "gone", "error"]


@dataclass(frozen=True)
class FaceReading:
    """What a pull found. `state`: `final` (a verdict: `status`, `reason`, `code`, billed
    or not), `pending` (the flow is still open), `expired` (the token ran out unused: a
    verdict of its own, `FACE_TOKEN_EXPIRED`), `gone` (the vendor no longer holds it: past its
    window, or deleted), `error` (no answer could be read: `reason` says why; try later).
    `signals` are text results only, each named `face_*`."""

    state: ReadingState
    status: StepStatus
    reason: str
    code: str | None = None
    billed: bool = False
    fee_cents: int = 0
    request_id: str | None = None
    signals: dict[str, str | int | float | bool] = field(default_factory=dict)
    answer_shape: frozenset[str] = frozenset()

    def note(self, vendor: str, action: str) -> dict[str, str | int | bool | None]:
        return _call_note(
            vendor, action, self.code, self.reason, self.request_id, self.fee_cents, 0
        )


def _error(reason: str, request_id: str | None = None) -> FaceReading:
    return FaceReading("error", StepStatus.ERROR, reason, request_id=request_id)


async def pull_result(
    client: VendorClient, contracts: VendorContracts, token: str, *, token_id: str
) -> FaceReading:
    """The verdict of the flow `token` at `client`'s vendor (see the module)."""
    apis = FACE_APIS[client.protocol]
    api = contracts.api(client.name, apis.pull)
    flow = contracts.face.get(client.name)
    if api is None or flow is None:
        return _error("no_contract")
    params: dict[str, Any]
    if client.protocol == "tencent":
        params = {"BizToken": token, "RuleId": flow.rule_id, "InfoType": "1"}
    else:
        params = {"SceneId": flow.scene_id, "CertifyId": token}
    started = time.perf_counter()
    reply = await client.post(apis.pull, params)
    if client.protocol == "tencent":
        reading = _read_tencent(reply, api, token_id=token_id)
    else:
        reading = _read_aliyun(reply, api)
    if reply.attempts:
        record_vendor_call(
            client.name,
            apis.pull,
            reading.reason,
            billed=reading.billed,
            seconds=time.perf_counter() - started,
        )
    return reading


def _rule(api: ApiContract, code: str, field_name: str) -> FaceReading | None:
    """None when `code` is mapped; else the error naming the field."""
    if code not in api.codes:
        return _error(f"vendor_malformed:{field_name}")
    return None


def _read_tencent(reply: VendorReply, api: ApiContract, *, token_id: str) -> FaceReading:
    answer = reply.answer
    rid = answer.request_id if answer is not None else None
    if reply.error is not None or answer is None:
        if reply.error in ("InvalidParameterValue.BizTokenExpired",):
            return FaceReading("gone", StepStatus.ERROR, "FACE_RESULT_GONE", request_id=rid)
        return _error(reply.error or "vendor_malformed", rid)
    text = answer.fields.get("Text")
    if not isinstance(text, dict):
        return _error("vendor_malformed:Text", rid)
    raw = text.get("ErrCode")
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        return _error("vendor_malformed:Text.ErrCode", rid)
    code = str(raw)
    unmapped = _rule(api, code, "Text.ErrCode")
    if unmapped is not None:
        return unmapped
    rule = api.codes[code]
    extra = text.get("Extra")
    if extra is not None and extra != token_id:
        # The verdict of another flow than the one this token was given for.
        return _error("face_token_mismatch", rid)
    signals: dict[str, str | int | float | bool] = {}
    for key, name in (
        ("LiveStatus", "face_liveness_status"),
        ("Comparestatus", "face_compare_status"),
        ("LivenessMode", "face_liveness_mode"),
    ):
        value = text.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            signals[name] = value
    sim = text.get("Sim")
    if isinstance(sim, str) and sim:
        try:
            signals["face_similarity"] = round(float(sim), 2)
        except ValueError:
            return _error("vendor_malformed:Text.Sim", rid)
    tags = text.get("LivenessInfoTag")
    if tags:
        if not isinstance(tags, list) or any(t not in tencent.LIVENESS_TAGS for t in tags):
            return _error("vendor_malformed:Text.LivenessInfoTag", rid)
        signals["face_attack_tags"] = ",".join(sorted(tags))
    if text.get("CompareLibType") == "权威库":
        signals["face_compare_source"] = "authoritative"
    kind = tencent.FACE_CODES[code].kind if code in tencent.FACE_CODES else ""
    state: ReadingState = (
        "pending" if rule.pending else "expired" if kind == "token_expired" else "final"
    )
    return FaceReading(
        state=state,
        status=StepStatus(rule.outcome),
        reason=rule.reason,
        code=code,
        billed=rule.billed,
        fee_cents=api.fee_cents if rule.billed else 0,
        request_id=rid,
        signals=signals,
        answer_shape=frozenset(str(k) for k in text if k in tencent.FACE_TEXT_KEPT),
    )


def _read_aliyun(reply: VendorReply, api: ApiContract) -> FaceReading:
    answer = reply.answer
    rid = answer.request_id if answer is not None else None
    if reply.error is not None or answer is None:
        known = aliyun.FACE_SERVICE_ERRORS.get(reply.error or "")
        if known is None:
            return _error(reply.error or "vendor_malformed", rid)
        if known.kind == "not_finished":
            return FaceReading(
                "pending",
                StepStatus.INCONCLUSIVE,
                "FACE_NOT_FINISHED",
                code=reply.error,
                request_id=rid,
            )
        verdict = _ALIYUN_CODE_VERDICTS.get(known.kind)
        if verdict is None:
            return _error(f"aliyun_{reply.error}", rid)
        return FaceReading("final", verdict[0], verdict[1], code=reply.error, request_id=rid)
    fields = answer.fields
    code = str(fields.get("SubCode"))
    unmapped = _rule(api, code, "ResultObject.SubCode")
    if unmapped is not None:
        return unmapped
    rule = api.codes[code]
    if (fields.get("Passed") == "T") != (rule.outcome == "passed"):
        return _error("vendor_malformed:ResultObject.Passed", rid)
    signals: dict[str, str | int | float | bool] = {}
    material_raw = fields.get("MaterialInfo")
    if material_raw:
        try:
            material = json.loads(material_raw)
        except ValueError:
            return _error("vendor_malformed:ResultObject.MaterialInfo", rid)
        if not isinstance(material, dict):
            return _error("vendor_malformed:ResultObject.MaterialInfo", rid)
        front = material.get("facialPictureFront")
        scores = front if isinstance(front, dict) else {}
        for key, name in (
            ("faceAttack", "face_liveness_attack"),
            ("faceOcclusion", "face_occlusion"),
        ):
            if material.get(key) in ("T", "F"):
                signals[name] = material[key] == "T"
        for key, name in (
            ("verifyScore", "face_similarity"),
            ("faceAttackScore", "face_attack_score"),
            ("qualityScore", "face_quality_score"),
        ):
            value = scores.get(key, material.get(key))
            if isinstance(value, int | float) and not isinstance(value, bool):
                signals[name] = round(float(value), 4)
    risk = fields.get("DeviceRisk")
    if isinstance(risk, str) and risk:
        signals["face_device_risk"] = ",".join(sorted(t for t in risk.split(",") if t))
    return FaceReading(
        state="final",
        status=StepStatus(rule.outcome),
        reason=rule.reason,
        code=code,
        billed=rule.billed,
        fee_cents=api.fee_cents if rule.billed else 0,
        request_id=rid,
        signals=signals,
        answer_shape=frozenset(
            k for k in fields if k in ("Passed", "SubCode", "MaterialInfo", "DeviceRisk")
        ),
    )


@dataclass(frozen=True)
class Deletion:
    """What a deletion did: `deleted` (now, or before: `ALREADY_DELETED`), `reason` (the
    contract's, or the reply's fault), the request id."""

    deleted: bool
    reason: str
    request_id: str | None = None


async def delete_result(client: VendorClient, contracts: VendorContracts, token: str) -> Deletion:
    """Aliyun's `DeleteFaceVerifyResult` for a flow whose verdict was read (`DeleteAfterQuery`
    "Y": Aliyun refuses it otherwise). A vendor without one: nothing to do."""
    apis = FACE_APIS[client.protocol]
    if apis.delete is None:
        return Deletion(True, "NOTHING_HELD")
    api = contracts.api(client.name, apis.delete)
    if api is None:
        return Deletion(False, "no_contract")
    started = time.perf_counter()
    reply = await client.post(apis.delete, {"CertifyId": token, "DeleteAfterQuery": "Y"})
    answer = reply.answer
    rid = answer.request_id if answer is not None else None
    if reply.error is not None or answer is None:
        outcome = Deletion(False, reply.error or "vendor_malformed", rid)
    else:
        result = str(answer.fields.get("DeleteResult"))
        rule = api.codes.get(result)
        if rule is None:
            outcome = Deletion(False, "vendor_malformed:ResultObject.DeleteResult", rid)
        else:
            deleted, reason = rule.outcome == "passed", rule.reason
            detail = api.details.get("FailReason", {}).get(str(answer.fields.get("FailReason")))
            if result != "Y" and detail is not None:
                deleted, reason = detail.outcome == "passed", detail.reason
            outcome = Deletion(deleted, reason, rid)
    if reply.attempts:
        record_vendor_call(
            client.name,
            apis.delete,
            outcome.reason,
            billed=False,
            seconds=time.perf_counter() - started,
        )
    return outcome
