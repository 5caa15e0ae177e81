"""A vendor that answers a redirect: the signed request, which carries personal data, is never
sent on to wherever the redirect points, and the step ends `error` at once (no retry)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from sandbox.server import SandboxServer
from tests.integration.test_sandbox_vendor import IDS, permit, subject
from verifiers.base import StepStatus
from verifiers.id_check import IdCheckVerifier
from verifiers.vendor import VendorClient, VendorEndpoint


async def test_when_a_vendor_redirects_then_nothing_is_sent_on_and_the_step_is_an_error():
    received: list[bytes] = []

    async def elsewhere(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.json_response({"result": "MATCH"})

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
            endpoint = VendorEndpoint(base_url=server.base_url, app_key="k", app_secret="s")
            async with aiohttp.ClientSession() as session:
                evidence = await IdCheckVerifier(
                    VendorClient(endpoint, session, max_attempts=3)
                ).verify(subject(IDS["MATCH"]), permit())
    assert evidence.status is StepStatus.ERROR and evidence.reason == "vendor_redirect"
    assert received == []  # the personal data went nowhere else
    assert len(hits) == 1  # a redirect is definitive: not retried
