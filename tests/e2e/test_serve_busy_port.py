"""`idv serve` on a port something else listens on is refused before it starts or prints an
address: one line naming `--port`, exit 2 (3 is a batch that did not finish)."""

from __future__ import annotations

import os
import socket

from tests.support import run_idv


def test_when_the_port_is_taken_then_serve_refuses_it_at_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    env["IDV_HOME"] = str(tmp_path / "home")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_idv(env, "serve", "--port", str(port))
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: --port: is in use")
