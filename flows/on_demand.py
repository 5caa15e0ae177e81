"""On-demand verification: one applicant through the onboarding pipeline, synchronously,
without a Prefect flow run per request (`POST /verifications`, `idv verify`).

The same code as a batch line (`ChunkRunner`: consent recorded, every step through the gate,
the vendor contracts' rates, caps and spend, the decision, one journal), as a run of one
line; its one answer per source is held to the response suites' rule directly
(`flows.quality.answer_complete`), since a share over one answer is that answer. An
idempotency key names the request among its caller's keys, and is bound to the body it was
first sent with: the same caller, key and body again returns the first answer without
calling anyone; another body under the key is refused (`InvalidInput`), and another caller's
key of the same text is a request of its own. A request that died mid-way, sent again under
its key, makes its unstored calls under the vendor keys they had, so they are billed once.

A process answering requests keeps one `Engine` (`Runtime.on_demand`): an event loop in a
thread of its own with one step runner (`flows.steps.Steps`: one vendor session whose
connections are kept alive between requests, one client per vendor whose circuit breaker
sees every request's calls, each verifier built once), one journal (requests in flight at
once share its group commits) and the limits' store. A request counts against the vendor
contracts' daily ceilings; a run's spend ceiling is a batch's.
A request hands its applicant to that loop and waits for the answer; it opens no loop,
connection or thread of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import uvloop

from flows.onboarding import DEFERRED, ChunkReport, ChunkRunner, Pending
from flows.parts import RuntimeParts
from flows.quality import answer_complete
from flows.steps import Steps
from intake.models import ApplicantLine, Refusal
from intake.reader import parse_record
from services.errors import InvalidInput, Unavailable
from services.runs import owner_id
from storage.audit import ChainRolledBackError
from storage.journal import Journal
from storage.records import Decision, StepRecord

BATCH_NAME = "on-demand"
T = TypeVar("T")
log = logging.getLogger("idv.flows.on_demand")


@dataclass(frozen=True)
class RequestKey:
    """What an idempotency key names: `basis`, the request across its retries among its
    caller's keys (in the runs table, as a batch's hash), and `digest`, the body it came
    with (`request_digest`)."""

    basis: str
    digest: str


def request_basis(idempotency_key: str, caller: str) -> str:
    """What names a request across its retries: the key within its caller's own keys (the
    authenticated actor's name), so the same text from another caller is another request."""
    # A JSON array, not a joined string: no caller name and key can spell another pair.
    named = json.dumps(["idv-on-demand", caller, idempotency_key], ensure_ascii=False)
    return hashlib.sha256(named.encode()).hexdigest()


def request_digest(rt: RuntimeParts, record: Mapping[str, Any]) -> str:
    """The request body as a digest: its canonical JSON (keys sorted, no spaces, UTF-8)
    through SHA-256, keyed by this installation's blind-index key (HMAC): a body of a few
    personal fields cannot be guessed back from the database by whoever lacks the key
    file. Neither the body nor its canonical text is kept."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return rt.store.cipher.blind_index(canonical, table="runs", column="request_digest")


def parse_request(
    rt: RuntimeParts, record: Any, idempotency_key: str | None, caller: str | None
) -> tuple[ApplicantLine, RequestKey | None]:
    """The request's batch line and, under a key, what names it across retries (the key
    bound to `caller`, the authenticated actor's name, and to the body). `InvalidInput`
    for a record intake refuses (field and rule)."""
    if not isinstance(record, Mapping):
        raise InvalidInput("request", "must be a JSON object (one batch line)")
    line = parse_record(
        record, 1, consent_policy=rt.consent_policy, notices=rt.notices, now=datetime.now(UTC)
    )
    if isinstance(line, Refusal):
        raise InvalidInput(line.field, line.reason)
    if not idempotency_key:
        return line, None
    if not caller:  # a key is a caller's: without one it would be everybody's
        raise ValueError("an idempotency key needs the caller it belongs to")
    return line, RequestKey(request_basis(idempotency_key, caller), request_digest(rt, record))


def verify_one(
    engine: Engine,
    record: Any,
    *,
    idempotency_key: str | None = None,
    caller: str | None = None,
) -> dict[str, Any]:
    """Verify one applicant on a process's engine (`Runtime.on_demand`); the masked answer
    (`answer`), whose `replayed` says whether it is an earlier request's: the same `caller`
    (the authenticated actor's name, needed with a key) sent the same body under the same
    key. `InvalidInput` for a record intake refuses (field and rule) and for a key its
    caller used for another body; `Conflict` for a key whose request is still working."""
    line, key = parse_request(engine.rt, record, idempotency_key, caller)
    return engine.run(lambda e: e.request(line, key))


async def verify_one_async(
    engine: Engine,
    record: Any,
    *,
    idempotency_key: str | None = None,
    caller: str | None = None,
) -> dict[str, Any]:
    """`verify_one` for a caller on an event loop of its own (the HTTP API's): it waits for
    the engine's answer without holding a thread."""
    line, key = parse_request(engine.rt, record, idempotency_key, caller)
    return await asyncio.wrap_future(engine.submit(lambda e: e.request(line, key)))


class Engine:
    """The event loop, vendor session, journal and limits that a process's on-demand
    requests share. `run` may be called from any thread; `close` ends it all."""

    def __init__(self, rt: RuntimeParts) -> None:
        self.rt = rt
        self._loop = uvloop.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failed: BaseException | None = None
        self.steps: Steps | None = None
        self.journal: Journal | None = None
        # One request at a time per key (its basis), on the engine's loop: a second request
        # under a key whose first is still working waits for it, then replays its answer.
        self._keys: dict[str, tuple[asyncio.Lock, int]] = {}
        self._thread = threading.Thread(target=self._serve, name="idv-on-demand", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failed is not None:
            raise self._failed

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with (
                Journal(self.rt.store) as journal,
                Steps(self.rt, gate=self.rt.gate_over(journal, journal)) as steps,
            ):
                self.steps, self.journal = steps, journal
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._failed = exc
            raise
        finally:
            self._ready.set()

    def submit(
        self, work: Callable[[Engine], Coroutine[Any, Any, T]]
    ) -> concurrent.futures.Future[T]:
        """`work(engine)`'s coroutine started on the engine's loop: its future."""
        if self._stop is None or not self._thread.is_alive():
            raise RuntimeError("the on-demand engine is closed")
        return asyncio.run_coroutine_threadsafe(work(self), self._loop)

    def run(self, work: Callable[[Engine], Coroutine[Any, Any, T]]) -> T:
        """`work(engine)`'s coroutine run on the engine's loop; its result, or its error."""
        return self.submit(work).result()

    async def db(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """A one-at-a-time `Store` method, on the journal's thread: every write a request
        makes then comes from that one thread, one after the other, never two of this
        process's threads waiting on each other for SQLite's write lock (whose busy wait
        sleeps up to 100 ms at a time)."""
        assert self.journal is not None
        return await self.journal.call(fn, *args, **kwargs)

    async def request(self, line: ApplicantLine, key: RequestKey | None) -> dict[str, Any]:
        """One request's answer: its replay, or a run of one opened, verified and closed.
        Under a key its caller sent with another body, `InvalidInput` before anything is
        read back, recorded or called. Requests under one key in this process go one at a
        time (the second replays the first's answer); a request under the key working in
        another process is `Conflict` (`close_crashed`)."""
        if key is None:
            return await self._request(line, None)
        lock, waiting = self._keys.get(key.basis) or (asyncio.Lock(), 0)
        self._keys[key.basis] = (lock, waiting + 1)
        try:
            async with lock:
                return await self._request(line, key)
        finally:
            lock, waiting = self._keys[key.basis]
            if waiting == 1:
                del self._keys[key.basis]
            else:
                self._keys[key.basis] = (lock, waiting - 1)

    async def _request(self, line: ApplicantLine, key: RequestKey | None) -> dict[str, Any]:
        rt = self.rt
        resumes = None
        basis = key.basis if key is not None else None
        if key is not None:
            if await self.db(rt.store.runs.request_digests, key.basis) - {key.digest}:
                raise InvalidInput("Idempotency-Key", "was used for another request")
            earlier = await self.db(rt.store.runs.finished_run, key.basis)
            if earlier is not None:
                return await self.db(answer, rt, earlier, replayed=True)
            resumes = await self.db(
                rt.services.runs.close_crashed, key.basis, stale_s=rt.settings.run_stale_s
            )
        # The run opens in the commit of the request's first write (its grants) and closes
        # in its decided applicant's: two durable commits fewer per request, each a flush
        # to disk on PostgreSQL. Nothing is paid for before the run is committed.
        assert self.journal is not None
        try:
            await self.db(rt.store.audit.require_head)
        except ChainRolledBackError as exc:  # a cut chain: no run, nothing paid for on it
            raise Unavailable("audit_chain", f"{exc.rule}; run `idv audit verify`") from None
        run_id = self.journal.start_run(
            batch_name=BATCH_NAME,
            batch_sha256=basis,
            owner=owner_id(),
            resumes=resumes,
            request_digest=key.digest if key is not None else None,
        )
        self.journal.finish_with_decided(run_id)
        try:
            stored = await self.work_line(run_id, line, basis)
        except BaseException:
            self.journal.finished(run_id)
            await asyncio.shield(
                self.db(rt.store.runs.mark_crashed, run_id, reason="request_failed")
            )
            raise
        if not self.journal.finished(run_id):
            await self.db(rt.store.runs.finish, run_id, checkpoint=False)
        if stored is None:  # refused, or known already: the answer is what the store holds
            return await self.db(answer, rt, run_id, replayed=False)
        steps, decision = stored
        # Stored just now by this run alone: the answer the store would give, without
        # reading it back (a replay reads it, and answers the same).
        return _answered(
            run_id,
            replayed=False,
            fees_cents=sum(s.fee_cents for s in steps),
            applicant_ref=line.applicant_ref,
            disposition="new",
            outcome=decision.outcome,
            steps=[{"verifier": s.step, "status": s.status, "reason": s.reason} for s in steps],
        )

    async def work_line(
        self, run_id: str, line: ApplicantLine, basis: str | None
    ) -> tuple[list[StepRecord], Decision] | None:
        """The line verified and stored: the steps and decision stored, or None when the
        line was refused or its applicant is known already."""
        rt = self.rt
        assert self.steps is not None and self.journal is not None
        report = ChunkReport(lines=1)
        runner = ChunkRunner(
            rt, run_id, self.steps, self.journal, batch_sha256=basis, sha_known=True, degraded=set()
        )
        prepared = await runner.prepare(line, report)
        if not isinstance(prepared, Pending) and prepared.disposition == DEFERRED:
            # A call kept back on our side (the limiter down, a ceiling): nobody decided,
            # nothing stored; the request, sent again under its key, resumes.
            raise Unavailable(
                prepared.field or "request",
                (prepared.reason or "was not sent").split(";")[0] + "; send the request again",
            )
        if not isinstance(prepared, Pending):
            await self.db(rt.store.runs.add_lines, run_id, [prepared])
            return None
        # The response suites' rule over this one answer per source: a source whose
        # answer lacks a field its model requires ends `error`, never `passed`.
        broken = {
            step for step, shape in prepared.shapes.items() if not answer_complete(step, shape)
        }
        for step in sorted(broken):
            log.warning("source %s degraded: its answer lacks a required field", step)
        runner.degraded |= broken
        done = await runner.finish(prepared, report)
        if done is not None:
            await self.db(rt.store.runs.add_lines, run_id, [done])
        return prepared.stored

    def close(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def _answered(
    run_id: str,
    *,
    replayed: bool,
    fees_cents: int,
    applicant_ref: str | None,
    disposition: str,
    outcome: str | None,
    steps: list[dict[str, Any]],
    **refusal: Any,
) -> dict[str, Any]:
    """The answer's one shape, whether read from the store or made from what was stored."""
    return {
        "run_id": run_id,
        "replayed": replayed,
        "fees_cents": fees_cents,
        "applicant_ref": applicant_ref,
        "disposition": disposition,
        "outcome": outcome,
        "steps": steps,
        **refusal,
    }


def answer(rt: RuntimeParts, run_id: str, *, replayed: bool) -> dict[str, Any]:
    """The masked answer: the applicant's ref, outcome and steps (status and reason), fees."""
    report = rt.services.runs.report(
        {"run_id": run_id, "counts": {}, "fees_cents": rt.store.runs.fees(run_id), "lines": 1}
    )
    applicant = report.applicants[0] if report.applicants else None
    if applicant is None:
        refused = report.refused[0] if report.refused else None
        return _answered(
            run_id,
            replayed=replayed,
            fees_cents=report.fees_cents,
            applicant_ref=refused.applicant_ref if refused else None,
            disposition="refused",
            outcome=None,
            steps=[],
            field=refused.field if refused else None,
            rule=refused.reason if refused else None,
        )
    return _answered(
        run_id,
        replayed=replayed,
        fees_cents=report.fees_cents,
        applicant_ref=applicant.applicant_ref,
        disposition=applicant.disposition,
        outcome=applicant.outcome,
        steps=[s.model_dump(mode="json") for s in applicant.steps],
    )
