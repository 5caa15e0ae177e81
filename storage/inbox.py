"""Batch files taken from the inbox, by content hash: a durable claim per content, so that the
same file dropped twice (or seen by two scheduled runs at once) is run once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from storage import models as m
from storage.audit import AuditLog
from storage.context import StoreContext, as_utc, rowcount
from storage.records import InboxClaim, InboxFileRecord


def _record(row: m.InboxFile) -> InboxFileRecord:
    return InboxFileRecord(
        sha256=row.sha256,
        name=row.name,
        status=row.status,
        reason=row.reason,
        run_id=row.run_id,
        moved_to=row.moved_to,
        claimed_at=as_utc(row.claimed_at),
        beat_at=as_utc(row.beat_at),
        finished_at=as_utc(row.finished_at) if row.finished_at else None,
    )


class InboxRepository:
    """Claims on inbox files: `claim` before a run, `beat` while it runs, `finish` after it
    (or `release` when the run broke, so that the file may be dropped again)."""

    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    def claim(self, sha256: str, name: str, *, stale_after: timedelta) -> InboxClaim:
        """Claim the content `sha256` for a run. The insert is the lock: of two callers, one
        wins. A `running` claim not renewed within `stale_after` (its run stopped without
        finishing) is taken over by exactly one caller."""
        now = self._ctx.clock()
        try:
            with self._ctx.transaction() as s:
                row = m.InboxFile(
                    sha256=sha256, name=name, status="running", claimed_at=now, beat_at=now
                )
                s.add(row)
                s.flush()
                self._audit.record(
                    "inbox.claimed",
                    None,
                    {"sha256": sha256, "name": name, "taken_over": False},
                    session=s,
                )
                return InboxClaim(held=True, file=_record(row))
        except IntegrityError:
            pass
        with self._ctx.transaction() as s:
            taken = rowcount(
                s.execute(
                    update(m.InboxFile)
                    .where(
                        m.InboxFile.sha256 == sha256,
                        m.InboxFile.status == "running",
                        m.InboxFile.beat_at < now - stale_after,
                    )
                    .values(name=name, claimed_at=now, beat_at=now)
                )
            )
            if taken:
                self._audit.record(
                    "inbox.claimed",
                    None,
                    {"sha256": sha256, "name": name, "taken_over": True},
                    session=s,
                )
            current = s.get(m.InboxFile, sha256)
            if current is not None:
                return InboxClaim(held=bool(taken), taken_over=bool(taken), file=_record(current))
        # Released by its holder between our insert and this read: claim afresh.
        return self.claim(sha256, name, stale_after=stale_after)

    def beat(self, sha256: str) -> None:
        """The run holding the claim is alive."""
        with self._ctx.transaction() as s:
            s.execute(
                update(m.InboxFile)
                .where(m.InboxFile.sha256 == sha256, m.InboxFile.status == "running")
                .values(beat_at=self._ctx.clock())
            )

    def finish(
        self,
        sha256: str,
        *,
        status: str,
        reason: str | None,
        run_id: str | None,
        moved_to: str | None,
    ) -> None:
        """Record what became of the file: `done` or `failed` (with the reason)."""
        with self._ctx.transaction() as s:
            row = s.get(m.InboxFile, sha256)
            if row is None:
                raise KeyError("sha256: no such inbox file")
            row.status, row.reason, row.run_id, row.moved_to = status, reason, run_id, moved_to
            row.finished_at = self._ctx.clock()
            self._audit.record(
                "inbox.finished",
                None,
                {
                    "sha256": sha256,
                    "name": row.name,
                    "status": status,
                    "reason": reason,
                    "run_id": run_id,
                },
                session=s,
            )

    def release(self, sha256: str, *, reason: str) -> None:
        """Forget a claim whose run broke (not a refusal of the file itself): the same
        content may be dropped into the inbox again and run."""
        with self._ctx.transaction() as s:
            s.execute(delete(m.InboxFile).where(m.InboxFile.sha256 == sha256))
            self._audit.record(
                "inbox.released", None, {"sha256": sha256, "reason": reason}, session=s
            )

    def get(self, sha256: str) -> InboxFileRecord | None:
        with self._ctx.transaction() as s:
            row = s.get(m.InboxFile, sha256)
            return _record(row) if row else None
