"""The applicant portal's sessions and one-time links (`applicant_sessions`, `applicant_links`,
revision 0025).

A session is one applicant ref on one journey: the pair is unique, so issuing a new link for
it (to resume, on another phone) reopens the same session, never a second one. A link is a
random id that a browser may use once, before it runs out; using it gives the browser a new
random cookie, whose SHA-256 alone is kept (the cookie it had before stops working). No
personal value: refs, journey and step names, times, the lender's return URL. Each change is
audited in its transaction (`applicant.link_issued`, `applicant.link_opened`,
`applicant.signed_in`, `applicant.step`, `applicant.done`).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage import models as m
from storage.audit import AuditLog
from storage.context import StoreContext, as_utc, rowcount


class PortalSession(BaseModel):
    """A session as the portal's service sees it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_id: str
    applicant_ref: str
    journey: str
    status: str
    step: str
    return_url: str | None
    cookie_expires_at: datetime | None
    created_at: datetime
    done_at: datetime | None


def _session(row: m.ApplicantSession) -> PortalSession:
    return PortalSession(
        session_id=row.id,
        applicant_ref=row.applicant_ref,
        journey=row.journey,
        status=row.status,
        step=row.step,
        return_url=row.return_url,
        cookie_expires_at=as_utc(row.cookie_expires_at) if row.cookie_expires_at else None,
        created_at=as_utc(row.created_at),
        done_at=as_utc(row.done_at) if row.done_at else None,
    )


class PortalRepository:
    """Sessions and links, one transaction per call."""

    def __init__(self, ctx: StoreContext, audit: AuditLog) -> None:
        self._ctx = ctx
        self._audit = audit

    def issue(
        self,
        *,
        applicant_ref: str,
        journey: str,
        first_step: str,
        new_session_id: str,
        link_id: str,
        expires_at: datetime,
        return_url: str | None,
        actor: str,
    ) -> tuple[PortalSession, bool]:
        """A new link into the applicant's session on `journey`, the session made when there is
        none (under `new_session_id`). Returns the session and whether it is new. A later
        link's return URL replaces the session's."""
        for attempt in (1, 2):
            try:
                return self._issue(
                    applicant_ref,
                    journey,
                    first_step,
                    new_session_id,
                    link_id,
                    expires_at,
                    return_url,
                    actor,
                )
            except IntegrityError:  # another link for the pair made the session first
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _issue(
        self,
        applicant_ref: str,
        journey: str,
        first_step: str,
        new_session_id: str,
        link_id: str,
        expires_at: datetime,
        return_url: str | None,
        actor: str,
    ) -> tuple[PortalSession, bool]:
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            row, created = _session_row(
                s, applicant_ref, journey, first_step, new_session_id, return_url, now
            )
            if created:
                s.flush()
            else:
                row.return_url = return_url
                row.updated_at = now
                if row.status == "done":  # asked again (a new notice): the same session, anew
                    row.status, row.step, row.done_at = "open", first_step, None
            s.add(
                m.ApplicantLink(
                    id=link_id, session_id=row.id, created_at=now, expires_at=expires_at
                )
            )
            self._audit.record(
                "applicant.link_issued",
                applicant_ref,
                {
                    "session_id": row.id,
                    "link_id": link_id,
                    "journey": journey,
                    "new_session": created,
                    "expires_at": expires_at.isoformat(),
                    "actor": actor,
                },
                session=s,
            )
            return _session(row), created

    def open(
        self, link_id: str, *, cookie_sha256: str, cookie_expires_at: datetime
    ) -> PortalSession | None:
        """Use the link once: its session, now held by the browser with this cookie; None when
        there is no such link, it was used, or it ran out (nothing is written then)."""
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            link = s.get(m.ApplicantLink, link_id)
            if link is None or link.used_at is not None or as_utc(link.expires_at) <= now:
                return None
            # Used once: the update wins for one request only, whoever came first.
            taken = s.execute(
                update(m.ApplicantLink)
                .where(m.ApplicantLink.id == link_id, m.ApplicantLink.used_at.is_(None))
                .values(used_at=now)
            )
            if rowcount(taken) != 1:
                return None
            row = s.get(m.ApplicantSession, link.session_id)
            assert row is not None  # the foreign key
            row.cookie_sha256 = cookie_sha256
            row.cookie_expires_at = cookie_expires_at
            row.updated_at = now
            self._audit.record(
                "applicant.link_opened",
                row.applicant_ref,
                {"session_id": row.id, "link_id": link_id, "journey": row.journey},
                session=s,
            )
            return _session(row)

    def sign_in(
        self,
        *,
        applicant_ref: str,
        journey: str,
        first_step: str,
        new_session_id: str,
        cookie_sha256: str,
        cookie_expires_at: datetime,
        via: str,
    ) -> PortalSession:
        """The applicant signed in without a link (`via`: how they proved who they are): their
        session on `journey` (made under `new_session_id` when there is none), now held by the
        browser with this cookie (a cookie it had before stops working). Audited as
        `applicant.signed_in` in the same transaction."""
        for attempt in (1, 2):
            try:
                return self._sign_in(
                    applicant_ref,
                    journey,
                    first_step,
                    new_session_id,
                    cookie_sha256,
                    cookie_expires_at,
                    via,
                )
            except IntegrityError:  # another sign-in for the pair made the session first
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _sign_in(
        self,
        applicant_ref: str,
        journey: str,
        first_step: str,
        new_session_id: str,
        cookie_sha256: str,
        cookie_expires_at: datetime,
        via: str,
    ) -> PortalSession:
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            row, created = _session_row(
                s, applicant_ref, journey, first_step, new_session_id, None, now
            )
            row.cookie_sha256 = cookie_sha256
            row.cookie_expires_at = cookie_expires_at
            row.updated_at = now
            s.flush()
            self._audit.record(
                "applicant.signed_in",
                applicant_ref,
                {"session_id": row.id, "journey": journey, "via": via, "new_session": created},
                session=s,
            )
            return _session(row)

    def by_cookie(self, cookie_sha256: str) -> PortalSession | None:
        """The session a browser's cookie holds, while it has not run out; else None."""
        with self._ctx.transaction() as s:
            row = s.scalar(
                select(m.ApplicantSession).where(m.ApplicantSession.cookie_sha256 == cookie_sha256)
            )
            if row is None or row.cookie_expires_at is None:
                return None
            if as_utc(row.cookie_expires_at) <= self._ctx.clock():
                return None
            return _session(row)

    def get(self, session_id: str) -> PortalSession | None:
        with self._ctx.transaction() as s:
            row = s.get(m.ApplicantSession, session_id)
            return _session(row) if row is not None else None

    def move(self, session_id: str, step: str, *, done: bool = False) -> PortalSession:
        """The session has reached `step` (and, with `done`, ended)."""
        now = self._ctx.clock()
        with self._ctx.transaction() as s:
            row = s.get(m.ApplicantSession, session_id)
            if row is None:
                raise KeyError(session_id)
            if row.step != step or (done and row.status != "done"):
                row.step = step
                row.updated_at = now
                kind = "applicant.step"
                if done and row.status != "done":
                    row.status, row.done_at, kind = "done", now, "applicant.done"
                self._audit.record(
                    kind,
                    row.applicant_ref,
                    {"session_id": row.id, "journey": row.journey, "step": step},
                    session=s,
                )
            return _session(row)


def _session_row(
    s: Session,
    applicant_ref: str,
    journey: str,
    first_step: str,
    new_session_id: str,
    return_url: str | None,
    now: datetime,
) -> tuple[m.ApplicantSession, bool]:
    """The applicant's one session of `journey` (one per pair: a unique constraint holds it),
    made at its first step when there is none; and whether it was made now."""
    row = s.scalar(
        select(m.ApplicantSession).where(
            m.ApplicantSession.applicant_ref == applicant_ref,
            m.ApplicantSession.journey == journey,
        )
    )
    if row is not None:
        return row, False
    row = m.ApplicantSession(
        id=new_session_id,
        applicant_ref=applicant_ref,
        journey=journey,
        status="open",
        step=first_step,
        return_url=return_url,
        created_at=now,
        updated_at=now,
    )
    s.add(row)
    return row, True
