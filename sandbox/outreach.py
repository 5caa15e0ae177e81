"""The applicant outreach channels, imitated: SMS, an in-app message, a WeChat template
message. Each takes the applicant's ref (the lender's systems know where to send) and the
text, keeps what would have been sent, and answers delivered or failed (`fail` per
channel), so tests can read what went out."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CHANNELS = ("sms", "in_app", "wechat_template")


@dataclass
class OutreachState:
    sent: list[dict[str, Any]] = field(default_factory=list)
    # Channels that answer `failed` (an unreachable phone, a user who blocked the account).
    fail: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def messages_for(self, applicant_ref: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.sent if m["applicant_ref"] == applicant_ref]


def outreach_routes(state: OutreachState) -> list[web.RouteDef]:
    async def send(request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        if channel not in CHANNELS:
            return web.json_response({"error": "unknown_channel"}, status=404)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "not_json"}, status=400)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("applicant_ref"), str)
            or not isinstance(body.get("text"), str)
        ):
            return web.json_response({"error": "applicant_ref and text are required"}, status=400)
        delivery = "failed" if channel in state.fail else "delivered"
        message_id = f"msg-{uuid.uuid4().hex[:16]}"
        with state._lock:
            state.sent.append(
                {
                    "channel": channel,
                    "applicant_ref": body["applicant_ref"],
                    "text": body["text"],
                    "template": body.get("template"),
                    "delivery": delivery,
                    "message_id": message_id,
                }
            )
        return web.json_response({"message_id": message_id, "delivery": delivery})

    return [web.post("/v1/outreach/{channel}", send)]
