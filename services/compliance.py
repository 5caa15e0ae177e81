"""The PIPL compliance-audit pack (个人信息保护合规审计管理办法, in force 2025-05-01): one
bundle for a period, for a role with `compliance_pack`.

It holds counts, codes, versions and hashes, never a personal value and never a subject's
ref: the notices and their hashes, consent statistics with refusals and abandoned asks,
gate decisions allowed and denied by scope, reveals with their purposes and (masked)
reasons, erasures, restrictions, holds, subject requests and their timeliness, retention
purges, key rotations, and the audit checkpoints covering the period (the files found in
the checkpoint folder, by their time; from an object store, the checkpoints over the
period's events; or none).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from policies.access import AccessPolicy
from policies.masking import mask_text
from policies.notices import Notice
from services.access import AccessControl
from services.consent import ConsentService, NoticeStats
from services.context import Actor
from services.errors import InvalidInput
from storage.store import Store

ZONE = ZoneInfo("Asia/Shanghai")
MAX_DAYS = 3660
# 《人脸识别技术应用安全管理办法》 (in force 2025-06-01): once face information of this many
# people is held, the handler files with the provincial CAC within 30 working days.
FACE_FILING_THRESHOLD = 100_000


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Period(Answer):
    """The days asked for (`from`, `to`, both included) and the instants they cover."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    since: str
    until: str
    zone: str


class MadeBy(Answer):
    actor: str
    role: str


class PackNotice(Answer):
    """A notice in force: its version, the SHA-256 of its text, what it covers."""

    version: str
    sha256: str
    published: str
    purposes: list[str]
    scopes: list[str]


class ConsentCounts(Answer):
    """Consent statistics per notice and channel, and the ledger's events of the period
    (`asks` by their outcome)."""

    by_notice: list[NoticeStats]
    granted: int
    withdrawn: int
    expired: int
    asks: dict[str, int]


class ScopeDecisions(Answer):
    """One scope's gate decisions, allowed and denied, each by reason."""

    allowed: dict[str, int]
    denied: dict[str, int]


class GateDecisions(Answer):
    allowed: int
    denied: int
    by_scope: dict[str, ScopeDecisions]


class RevealEvent(Answer):
    """One reveal: who, in which role, which field, under which purpose; the free-text
    reason masked."""

    at: str
    actor: str | None
    role: str | None
    field: str | None
    purpose: str | None
    reason: str


class Reveals(Answer):
    count: int
    by_purpose: dict[str, int]
    events: list[RevealEvent]


class Erasures(Answer):
    erased: int
    restricted: int


class Holds(Answer):
    placed: int
    by_basis: dict[str, int]


class SubjectRequestCounts(Answer):
    """Requests opened in the period; per kind, how many were opened and answered in time,
    late, open or open past their deadline."""

    opened: int
    by_kind: dict[str, dict[str, int]]


class RetentionPurge(Answer):
    """A purge's record in the chain: counts by class, never a ref."""

    at: str
    seq: int
    policy_version: str | None
    counts: dict[str, int] | None
    awaiting: dict[str, int] | None


class FaceVerification(Answer):
    """People whose face a vendor processed for idv (distinct applicant refs: the safe side of
    the threshold), in the period and in all up to its end, beside the CAC filing threshold
    (idv keeps no face image: the vendors process them); the face flows by their end."""

    people_in_period: int
    people_to_date: int
    filing_threshold: int
    threshold_reached: bool
    flows: dict[str, int]
    lost: int
    deleted_at_vendor: int
    another_way: int


class KeyEvent(Answer):
    """A key rotation (`active`, `rewrapped`, `remaining`) or retirement (`version`): the
    facts its audit event holds, and no other key."""

    at: str
    kind: Literal["keys.rotated", "keys.retired"]
    active: str | None = None
    version: str | None = None
    rewrapped: int | None = None
    remaining: int | None = None

    @model_serializer(mode="wrap")
    def _held_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        return {k: v for k, v in out.items() if v is not None or k in ("at", "kind")}


class ChainHead(Answer):
    """The chain held against the latest checkpoint: counts taken from a chain cut behind it
    would be short, and this says so."""

    intact: bool
    rule: str | None
    events: int


class AuditChain(Answer):
    events_in_period: int
    first_seq: int | None
    last_seq: int | None
    head: ChainHead


class FolderCheckpoint(Answer):
    """A checkpoint file of the folder written in the period; `path` is where the surface
    copies it from (not in the pack)."""

    name: str
    path: str = Field(exclude=True)
    written_at: str
    sha256: str


class StoredCheckpoint(Answer):
    """A checkpoint (or its time-stamp token) kept in an object store; `data`, its bytes as
    read, is for the surface to write beside the pack (not in the pack)."""

    name: str
    url: str
    size: int
    data: bytes = Field(exclude=True)
    sha256: str


class Checkpoints(Answer):
    """Where checkpoints are kept, those of the period, and why there are none if so."""

    folder: str | None
    files: list[FolderCheckpoint | StoredCheckpoint]
    note: str | None


class CompliancePack(Answer):
    """The pack of a period as one document: counts, codes, versions and hashes, never a
    personal value or a ref. `model_dump(mode="json")` is the exported `pack.json`."""

    pack_version: int
    period: Period
    generated_at: str
    generated_by: MadeBy
    notices: list[PackNotice]
    consent: ConsentCounts
    gate_decisions: GateDecisions
    reveals: Reveals
    erasures: Erasures
    holds: Holds
    subject_requests: SubjectRequestCounts
    retention_purges: list[RetentionPurge]
    face_verification: FaceVerification
    key_rotations: list[KeyEvent]
    audit_chain: AuditChain
    checkpoints: Checkpoints


def period(start: str, end: str) -> tuple[datetime, datetime]:
    """`--from` and `--to` (YYYY-MM-DD, both days included, Asia/Shanghai) as an instant
    range [since, until)."""
    try:
        first = date.fromisoformat(start)
    except (TypeError, ValueError):
        raise InvalidInput("--from", "must be a date (YYYY-MM-DD)") from None
    try:
        last = date.fromisoformat(end)
    except (TypeError, ValueError):
        raise InvalidInput("--to", "must be a date (YYYY-MM-DD)") from None
    if last < first:
        raise InvalidInput("--to", "must not be before --from")
    if (last - first).days > MAX_DAYS:
        raise InvalidInput("--to", f"the period must be at most {MAX_DAYS} days")
    # In UTC: stored times are UTC, and SQLite compares them as text.
    return (
        datetime.combine(first, time(0), tzinfo=ZONE).astimezone(UTC),
        datetime.combine(last + timedelta(days=1), time(0), tzinfo=ZONE).astimezone(UTC),
    )


class ComplianceService:
    def __init__(
        self,
        store: Store,
        access: AccessPolicy,
        notices: Mapping[str, Notice],
        consent: ConsentService,
        *,
        checkpoint_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.access = access
        self.control = AccessControl(store, access)
        self.notices = notices
        self.consent = consent
        self.checkpoint_dir = checkpoint_dir

    def pack(self, start: str, end: str, *, actor: Actor) -> CompliancePack:
        """The pack of the period as one document; `checkpoints` lists the checkpoint files
        of the period (a folder's with their `path`, an object store's with their `data`)
        for the surface to copy beside it."""
        self.control.require(actor, "compliance_pack", operation="compliance_pack")
        since, until = period(start, end)
        head = self.store.audit.check_head()
        events = self.store.audit.events(since=since, until=until)
        by_kind: dict[str, list[Any]] = defaultdict(list)
        for e in events:
            by_kind[e.kind].append(e)

        gate: dict[str, dict[str, Counter[str]]] = defaultdict(
            lambda: {"allowed": Counter(), "denied": Counter()}
        )
        for kind, verdict in (("consent.allowed", "allowed"), ("consent.denied", "denied")):
            for e in by_kind[kind]:
                for scope in e.detail.get("scopes") or ["(none)"]:
                    gate[scope][verdict][str(e.detail.get("reason", ""))] += 1
        # The nightly re-screen decides a slice of people in one event (`consent.decided`):
        # each person in it is one decision, allowed or refused by its reason.
        allowed_n = len(by_kind["consent.allowed"])
        denied_n = len(by_kind["consent.denied"])
        for e in by_kind["consent.decided"]:
            allowed = len(e.detail.get("allowed") or {})
            denied = {str(k): int(v) for k, v in (e.detail.get("denied") or {}).items()}
            allowed_n += allowed
            denied_n += sum(denied.values())
            for scope in e.detail.get("scopes") or ["(none)"]:
                if allowed:
                    gate[scope]["allowed"][""] += allowed
                gate[scope]["denied"].update(denied)
        reveals = [
            RevealEvent(
                at=e.at.isoformat(),
                actor=e.detail.get("actor"),
                role=e.detail.get("role"),
                field=e.detail.get("field"),
                purpose=e.detail.get("purpose"),
                reason=mask_text(str(e.detail.get("reason", ""))),
            )
            for e in by_kind["applicant.revealed"]
        ]
        requests = self.store.requests.list(since=since, until=until)
        now = self.store.clock()
        timeliness: dict[str, Counter[str]] = defaultdict(Counter)
        for r in requests:
            deadline = datetime.fromisoformat(r["deadline"])
            if r["status"] == "answered":
                late = datetime.fromisoformat(r["answered_at"]) > deadline
                state = "answered_late" if late else "answered_in_time"
            else:
                state = "open_overdue" if now > deadline else "open"
            timeliness[r["kind"]][state] += 1
            timeliness[r["kind"]]["opened"] += 1
        face_to_date = self.store.face.count_people(until=until)

        pack = CompliancePack(
            pack_version=1,
            period=Period(
                from_=start,
                to=end,
                since=since.isoformat(),
                until=until.isoformat(),
                zone=str(ZONE),
            ),
            generated_at=now.isoformat(),
            generated_by=MadeBy(actor=actor.name, role=actor.role),
            notices=[
                PackNotice(
                    version=n.version,
                    sha256=n.text_sha256,
                    published=n.published.isoformat(),
                    purposes=sorted(n.purposes),
                    scopes=sorted(n.scopes),
                )
                for n in sorted(self.notices.values(), key=lambda n: n.published)
            ],
            consent=ConsentCounts(
                by_notice=self.consent.stats(since=since, until=until).stats,
                granted=len(by_kind["consent.granted"]),
                withdrawn=len(by_kind["consent.withdrawn"]),
                expired=len(by_kind["consent.expired"]),
                asks=dict(Counter(str(e.detail.get("outcome")) for e in by_kind["consent.asked"])),
            ),
            gate_decisions=GateDecisions(
                allowed=allowed_n,
                denied=denied_n,
                by_scope={
                    scope: ScopeDecisions(
                        allowed=dict(verdicts["allowed"]), denied=dict(verdicts["denied"])
                    )
                    for scope, verdicts in sorted(gate.items())
                },
            ),
            reveals=Reveals(
                count=len(reveals),
                by_purpose=dict(Counter(str(r.purpose) for r in reveals)),
                events=reveals,
            ),
            erasures=Erasures(
                erased=len(by_kind["subject.erased"]),
                restricted=len(by_kind["subject.restricted"]),
            ),
            holds=Holds(
                placed=len(by_kind["subject.hold_placed"]),
                by_basis=dict(
                    Counter(str(e.detail.get("basis")) for e in by_kind["subject.hold_placed"])
                ),
            ),
            subject_requests=SubjectRequestCounts(
                opened=len(requests),
                by_kind={k: dict(c) for k, c in sorted(timeliness.items())},
            ),
            retention_purges=[
                RetentionPurge(
                    at=e.at.isoformat(),
                    seq=e.seq,
                    policy_version=e.detail.get("policy_version"),
                    counts=e.detail.get("counts"),
                    awaiting=e.detail.get("awaiting"),
                )
                for e in by_kind["retention.purged"]
            ],
            face_verification=FaceVerification(
                people_in_period=self.store.face.count_people(since=since, until=until),
                people_to_date=face_to_date,
                filing_threshold=FACE_FILING_THRESHOLD,
                threshold_reached=face_to_date >= FACE_FILING_THRESHOLD,
                flows=dict(Counter(str(e.detail.get("status")) for e in by_kind["face.result"])),
                lost=len(by_kind["face.token_lost"]),
                deleted_at_vendor=sum(
                    1 for e in by_kind["face.deleted"] if e.detail.get("deleted")
                ),
                another_way=len(by_kind["face.another_way"]),
            ),
            key_rotations=[
                KeyEvent.model_validate(
                    {
                        "at": e.at.isoformat(),
                        "kind": e.kind,
                        **{
                            k: v
                            for k, v in e.detail.items()
                            if k in ("active", "version", "rewrapped", "remaining")
                        },
                    }
                )
                for e in events
                if e.kind in ("keys.rotated", "keys.retired")
            ],
            audit_chain=AuditChain(
                events_in_period=len(events),
                first_seq=events[0].seq if events else None,
                last_seq=events[-1].seq if events else None,
                head=ChainHead(intact=head.intact, rule=head.rule, events=head.events),
            ),
            checkpoints=self._checkpoints(since, until, events),
        )
        self.store.audit.record(
            "compliance.pack_made",
            None,
            {
                "actor": actor.name,
                "role": actor.role,
                "from": start,
                "to": end,
                "events": len(events),
            },
        )
        return pack

    def _checkpoints(self, since: datetime, until: datetime, events: list[Any]) -> Checkpoints:
        folder = self.checkpoint_dir
        log = self.store.audit.checkpoints
        if folder is None and log is not None and log.directory is None:
            return self._stored_checkpoints(log, events)
        if folder is None or not folder.is_dir():
            return Checkpoints(
                folder=None,
                files=[],
                note="none: no checkpoint folder is configured"
                if folder is None
                else "none: the checkpoint folder does not exist",
            )
        files: list[FolderCheckpoint | StoredCheckpoint] = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            at = datetime.fromtimestamp(path.stat().st_mtime, tz=ZONE)
            if since <= at < until:
                files.append(
                    FolderCheckpoint(
                        name=str(path.relative_to(folder)),
                        path=str(path),
                        written_at=at.isoformat(),
                        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                    )
                )
        return Checkpoints(
            folder=str(folder),
            files=files,
            note=None if files else "none: no checkpoint was written in the period",
        )

    @staticmethod
    def _stored_checkpoints(log: Any, events: list[Any]) -> Checkpoints:
        """Checkpoints kept in an object store, which has no file times to go by: those
        that cover the period's events (sizes from its first event up to the first
        checkpoint at or past its last), each with its time-stamp token, their bytes
        carried for the surface to write beside the pack."""
        where = str(log.path_for(0)).rsplit("/", 1)[0]
        if not events:
            return Checkpoints(folder=where, files=[], note="none: no audit event in the period")
        first, last = events[0].seq, events[-1].seq
        sizes = log.sizes()
        closing = next((n for n in sizes if n >= last), None)
        chosen = [n for n in sizes if n >= first and (closing is None or n <= closing)]
        files: list[FolderCheckpoint | StoredCheckpoint] = []
        for size in chosen:
            note, token = log.files(size)
            for name, data in ((log.file_name(size), note), (log.file_name(size, ".tsr"), token)):
                if data is not None:
                    files.append(
                        StoredCheckpoint(
                            name=name,
                            url=str(log.place.locate(name)),
                            size=size,
                            data=data,
                            sha256=hashlib.sha256(data).hexdigest(),
                        )
                    )
        return Checkpoints(
            folder=where,
            files=files,
            note=None if files else "none: no checkpoint covers the period yet",
        )
