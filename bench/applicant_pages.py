"""Server time per applicant page at 50 concurrent applicants, on SQLite and PostgreSQL,
printed (not a timed test).

`idv serve` runs in a process of its own (with its admin port). Before it starts, this
process records for each of N applicants (default 50) the consents the portal would have
(`ConsentService.grant`, one grant per sensitive use) and opens a portal session for each
(`LinkService.issue` then `open`: the browser's cookie). Then N applicants at once, each an
HTTP client of its own with its cookie, go through the self-service pages one after another,
pausing 0.5 to 2 s before each tap as a person reading the page would (`THINK_S`), ROUNDS
times (default 4): the consents page, the requests page, a request asked (a copy of
their data: 303), the requests page again, a withdrawal's confirmation page, the withdrawal
(303), the consents page again. Every answer is checked (status, and no 5xx); its time is
taken at the client on loopback, from the request sent to the whole body read: the server's
time plus loopback, an upper bound on it. Beside it, from the server's own histogram
(`idv_http_request_seconds` on the admin port, timed inside the ASGI app), the bucket each
page's p99 falls in.

Printed per store: per page p50, p99 and max, all pages together against the target
(p99 < 150 ms), the serving process's CPU per page, and the load average before and after
(the machine's other work shows in the figures).

Usage: python bench/applicant_pages.py [APPLICANTS] [ROUNDS]
(SQLite always; then PostgreSQL when IDV_BENCH_DATABASE_URL is set, in a schema of its own)
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import re
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from harness import BIN, bench_schema, cpu_seconds, free_port, start_server, stop

TARGET_MS = 150.0
# A person on a phone reads a page before the next tap: between one answer and the next
# request, a pause drawn from this range (seconds). All N applicants are in their visit at
# once, their taps interleaved.
THINK_S = (0.5, 2.0)
CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')
NOTICE = "privacy-notice-2026.12"
USES = ("id_verification", "carrier_check", "court_records", "credit_report", "risk_scoring")


def prepare(settings_env: dict[str, str], n: int) -> list[str]:
    """The applicants' consents and an open portal session each; their cookies."""
    from flows.runtime import Runtime
    from flows.settings import Settings
    from services.applicant_links import LinkRequest
    from services.consent import GrantRequest
    from services.context import Actor

    rt = Runtime(
        Settings(
            home=Path(settings_env["IDV_HOME"]),
            key_file=Path(settings_env["IDV_KEY_FILE"]),
            database_url=settings_env.get("IDV_DATABASE_URL"),
            database_schema=settings_env.get("IDV_DATABASE_SCHEMA"),
        )
    )
    lender = Actor("bench-lender", "operator")
    cookies = []
    granted_at = datetime.now(UTC) - timedelta(hours=1)
    try:
        for i in range(n):
            ref = f"AP-{i:05d}"
            for use in USES:
                rt.services.consent.grant(
                    GrantRequest(
                        subject_ref=ref,
                        purpose="onboarding_verification",
                        scopes=frozenset({use}),
                        notice_version=NOTICE,
                        channel="app",
                        evidence=f"sha256:{i:064x}",
                        granted_at=granted_at,
                    ),
                    actor=lender,
                    via="api",
                )
            issued = rt.services.links.issue(LinkRequest(applicant_ref=ref), actor=lender)
            q = parse_qs(urlsplit(issued.path).query)
            opened = rt.services.links.open(
                issued.path.split("?")[0].rsplit("/", 1)[1], q["e"][0], q["s"][0]
            )
            cookies.append(opened.cookie.get_secret_value())
    finally:
        rt.close()
    return cookies


async def visit(client, times: dict[str, list[float]], rng: random.Random) -> None:
    """One applicant's pages, one after another, reading each for a while (`THINK_S`); each
    answer checked."""

    async def timed(name: str, method: str, path: str, expect: int, **kw) -> str:
        await asyncio.sleep(rng.uniform(*THINK_S))
        t0 = time.perf_counter()
        r = await client.request(method, path, **kw)
        body = r.text
        times[name].append((time.perf_counter() - t0) * 1000)
        if r.status_code != expect:
            raise RuntimeError(f"{name}: {r.status_code}, not {expect}")
        return body

    home = await timed("GET consents", "GET", "/applicant/self", 200)
    listed = await timed("GET requests", "GET", "/applicant/self/requests", 200)
    token = CSRF.search(listed).group(1)
    await timed(
        "POST ask (303)",
        "POST",
        "/applicant/self/requests",
        303,
        data={"csrf": token, "kind": "access"},
    )
    await timed("GET requests, asked", "GET", "/applicant/self/requests?done=opened", 200)
    consent = re.findall(r"/applicant/self/consents/([0-9a-f-]{36})/withdraw", home)
    if consent:  # one consent less each round: the last rounds find fewer to withdraw
        path = f"/applicant/self/consents/{consent[0]}/withdraw"
        await timed("GET withdraw confirm", "GET", path, 200)
        await timed("POST withdraw (303)", "POST", path, 303, data={"csrf": token})
    await timed("GET consents, withdrawn", "GET", "/applicant/self?done=withdrawn", 200)


async def load(
    url: str, cookies: list[str], rounds: int, metrics_url: str
) -> tuple[dict[str, list[float]], Buckets]:
    """The pages' times at the client, and the server's histogram once warmed up."""
    import httpx

    times: dict[str, list[float]] = defaultdict(list)
    clients = []
    for cookie in cookies:
        c = httpx.AsyncClient(base_url=url, timeout=60, follow_redirects=False)
        c.cookies.set("idv_applicant", cookie, path="/applicant")
        clients.append(c)
    try:
        # Warm-up: every client's connection and seed cookie, the server's templates.
        await asyncio.gather(*(c.get("/applicant/self") for c in clients))
        warm = histogram(metrics_url)
        gc.collect()
        gc.freeze()
        gc.disable()  # a collection here would stop the clock of every request in flight
        try:
            for round_no in range(rounds):
                await asyncio.gather(
                    *(
                        visit(c, times, random.Random(f"{round_no}-{i}"))  # noqa: S311
                        for i, c in enumerate(clients)
                    )
                )
        finally:
            gc.enable()
    finally:
        for c in clients:
            await c.aclose()
    return times, warm


Buckets = dict[tuple[str, str], dict[float, float]]


def histogram(metrics_url: str) -> Buckets:
    """The server's `idv_http_request_seconds` buckets of the self-service routes so far."""
    import httpx

    counts: Buckets = defaultdict(dict)
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        if not line.startswith("idv_http_request_seconds_bucket{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if not labels.get("route", "").startswith("/applicant/self"):
            continue
        le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
        counts[(labels["method"], labels["route"])][le] = float(line.rsplit(" ", 1)[1])
    return counts


def server_p99_buckets(now: Buckets, before: Buckets) -> dict[str, str]:
    """Per self-service route, over what was answered between `before` and `now`: the
    histogram bucket its p99 falls in (`<= 100 ms`)."""
    out = {}
    for (method, route), counted in sorted(now.items()):
        earlier = before.get((method, route), {})
        buckets = {le: n - earlier.get(le, 0.0) for le, n in counted.items()}
        total = buckets[float("inf")]
        bound = next(le for le in sorted(buckets) if buckets[le] >= 0.99 * total)
        out[f"{method} {route}"] = (
            f"<= {bound * 1000:.0f} ms" if bound != float("inf") else "> 10 s"
        )
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_store(pg: str | None, n: int, rounds: int) -> bool:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    with (
        bench_schema(pg) if pg else nullcontext("") as schema,
        tempfile.TemporaryDirectory(prefix="idv-applicant-pages-") as tmp,
    ):
        from storage.keyring import LocalKekProvider

        key = Path(tmp) / "keys" / "idv.key"
        LocalKekProvider(key, create=True, development=True)
        env = {
            **base,
            "IDV_HOME": str(Path(tmp) / "home"),
            "IDV_KEY_FILE": str(key),
            "IDV_WEB_COOKIE_SECURE": "false",  # loopback http: the seed cookie comes back
            "IDV_API_TOKEN": "bench-token-" + "0" * 40,
        }
        if pg:
            env["IDV_DATABASE_URL"], env["IDV_DATABASE_SCHEMA"] = pg, schema
        t0 = time.perf_counter()
        cookies = prepare(env, n)
        print(
            f"\n{'PostgreSQL' if pg else 'SQLite'}: {n} applicants, {len(USES)} consents and a "
            f"portal session each, prepared in {time.perf_counter() - t0:.0f} s"
        )
        ap, mp = free_port(), free_port()
        url = f"http://127.0.0.1:{ap}"
        argv = [str(BIN / "idv"), "serve", "--port", str(ap), "--metrics-port", str(mp)]
        proc = start_server(argv, env, f"{url}/healthz", f"idv serve (port {ap})")
        try:
            before = os.getloadavg()
            cpu = cpu_seconds(proc.pid)
            started = time.perf_counter()
            metrics = f"http://127.0.0.1:{mp}/metrics"
            times, warm = asyncio.run(load(url, cookies, rounds, metrics))
            wall = time.perf_counter() - started
            cpu = cpu_seconds(proc.pid) - cpu
            after = os.getloadavg()
            server = server_p99_buckets(histogram(metrics), warm)
        finally:
            stop(proc)
    every = [t for ts in times.values() for t in ts]
    print(f"{'page':26} {'pages':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, ts in times.items():
        print(f"{name:26} {len(ts):6d} {pct(ts, 0.5):8.1f} {pct(ts, 0.99):8.1f} {max(ts):8.1f}")
    p99 = pct(every, 0.99)
    verdict = "ok" if p99 < TARGET_MS else "OVER"
    print(
        f"{'every page':26} {len(every):6d} {pct(every, 0.5):8.1f} {p99:8.1f} "
        f"{max(every):8.1f}   target p99 < {TARGET_MS:.0f} ms: {verdict}"
    )
    print(
        f"{len(every) / wall:.0f} pages/s; the server's CPU {cpu / len(every) * 1000:.1f} ms a "
        f"page; load average (1, 5, 15 min) before {before[0]:.1f} {before[1]:.1f} "
        f"{before[2]:.1f}, after {after[0]:.1f} {after[1]:.1f} {after[2]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    print("the server's own histogram, the bucket of each route's p99:")
    for route, bound in server.items():
        print(f"  {route:60} {bound}")
    return p99 < TARGET_MS


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    held = run_store(None, n, rounds)
    pg = os.environ.get("IDV_BENCH_DATABASE_URL")
    if pg:
        held = run_store(pg, n, rounds) and held
    if not held:
        sys.exit(1)


if __name__ == "__main__":
    main()
