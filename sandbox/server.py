"""Run the sandbox: in a background thread on a free loopback port (tests, `--sandbox`), or in
the foreground (`idv sandbox serve`)."""

from __future__ import annotations

import asyncio
import gc
import threading
from types import TracebackType

from aiohttp import web

from sandbox.app import SandboxState, build_app


class SandboxServer:
    """`start()` returns the base URL; `stop()` shuts down cleanly. Also a context manager.
    Serves the vendor app for `state`, or any aiohttp app given as `app`."""

    def __init__(
        self,
        state: SandboxState | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        app: web.Application | None = None,
    ) -> None:
        self.state = state
        self._app = app
        self.host = host
        self.port = port
        self.base_url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> str:
        self._thread = threading.Thread(target=self._serve, name="idv-sandbox", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("sandbox did not start within 10 s")
        if self._error is not None:
            raise RuntimeError("sandbox failed to start") from self._error
        return self.base_url

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            app = self._app
            if app is None:
                assert self.state is not None, "a SandboxState or an app is needed"
                app = build_app(self.state)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port)
            loop.run_until_complete(site.start())
            server = site._server  # noqa: SLF001 - the bound port of port 0
            port = server.sockets[0].getsockname()[1] if server and server.sockets else self.port
            self.base_url = f"http://{self.host}:{port}"
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        # Answers still held back (timeout and late faults) are abandoned, not left pending.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(self._runner.cleanup())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> SandboxServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def keep_heap_still() -> None:
    """Move what is alive now (the libraries, the app) out of the collector's sight: a full
    collection over it holds the process for a fifth of a second, and every call in flight
    then arrives at once, counted against the rate as a burst the callers never sent."""
    gc.collect()
    gc.freeze()


def serve_forever(host: str, port: int, state: SandboxState) -> None:
    """Serve in the foreground until interrupted, on uvloop's event loop: the sandbox stands
    in for vendors on other machines, so it should take as little of this one as it can."""
    import uvloop

    app = build_app(state)
    keep_heap_still()
    web.run_app(
        app, host=host, port=port, access_log=None, print=None, loop=uvloop.new_event_loop()
    )
