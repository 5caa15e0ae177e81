"""`idv serve --sandbox`: the API and the sandbox wired to each other in one command, so a
newcomer can click through the OAuth dance on one machine. Driven here by an HTTP client."""

from __future__ import annotations

import html
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e
IDV = str(Path(sys.executable).with_name("idv"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_when_serve_runs_with_the_sandbox_then_the_wechat_dance_completes(tmp_path):
    port = free_port()
    env = {**os.environ, "IDV_HOME": str(tmp_path / ".idv"), "COLUMNS": "200"}
    env.pop("IDV_DATABASE_URL", None)
    proc = subprocess.Popen(
        [IDV, "serve", "--sandbox", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        printed = []
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            printed.append(line)
            if "OpenID Connect dance" in line:
                break
        start = re.search(r"WeChat dance: open (\S+)", "".join(printed))
        assert start, "".join(printed)
        with httpx.Client(follow_redirects=False, timeout=10) as client:
            for _ in range(100):  # uvicorn binds just after printing
                try:
                    r = client.get(start.group(1))
                    break
                except httpx.ConnectError:
                    time.sleep(0.1)
            assert r.status_code == 302
            page = client.get(r.headers["location"].split("#")[0])
            fields = dict(re.findall(r"name='(\w+)' value='([^']*)'", page.text))
            fields = {k: html.unescape(v) for k, v in fields.items()}
            back = client.post(
                page.url.copy_with(path="/connect/oauth2/authorize/confirm", query=None),
                data={**fields, "decision": "approve"},
            )
            done = client.get(back.headers["location"])
        assert done.status_code == 200 and "Authorization recorded" in done.text
    finally:
        proc.terminate()
        proc.wait(20)
