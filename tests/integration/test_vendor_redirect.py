"""A vendor that answers a redirect: the signed request, which carries personal data, is never
sent on to wherever the redirect points, and the step ends `error` at once (no retry)."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from policies import catalog
from sandbox.server import SandboxServer
from verifiers.base import StepStatus, Subject, _mint_permit
from verifiers.id_check import IdCheckVerifier
from verifiers.vendor import VendorClient, VendorEndpoint

SUBJECT = Subject(
    applicant_ref="S-1",
    name=SecretStr("张伟"),
    id_type="resident_id",
    id_number=SecretStr("11010519491231002X"),
    phone=SecretStr("+8613800138000"),
)


def permit():
    # Tests only: the gate mints permits; here we test the verifier behind it.
    return _mint_permit(
        consent_id="c-1",
        subject_ref="S-1",
        purpose="onboarding_verification",
        scopes=frozenset({"id_verification"}),
        step="id_check",
        issued_at=datetime.now(UTC),
        decision_id="d-1",
    )


async def test_when_a_vendor_redirects_then_nothing_is_sent_on_and_the_step_is_an_error():
    received: list[bytes] = []

    async def elsewhere(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.json_response({"Response": {"Result": "0", "RequestId": "r-1"}})

    sink = web.Application()
    sink.router.add_route("*", "/{tail:.*}", elsewhere)
    hits: list[str] = []
    with SandboxServer(app=sink) as other:

        async def redirect(request: web.Request) -> web.Response:
            hits.append(request.path)
            raise web.HTTPTemporaryRedirect(other.base_url + request.path)

        vendor = web.Application()
        vendor.router.add_route("*", "/{tail:.*}", redirect)
        with SandboxServer(app=vendor) as server:
            endpoint = VendorEndpoint(
                base_url=server.base_url,
                app_key="k",
                app_secret="s",
                name="tencent",
                protocol="tencent",
                region="ap-guangzhou",
            )
            async with aiohttp.ClientSession() as session:
                client = VendorClient(endpoint, session, max_attempts=3)
                verifier = IdCheckVerifier([client], catalog.vendor_contracts())
                evidence = await verifier.verify(SUBJECT, permit())
    assert evidence.status is StepStatus.ERROR and evidence.reason == "vendor_redirect"
    assert received == []  # the personal data went nowhere else
    assert len(hits) == 1  # a redirect is definitive: not retried
    # The vendor received the request: it is not sent to the fallback as if never sent.
    assert [c["vendor"] for c in evidence.calls] == ["tencent"]
