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
from typing import Any
from zoneinfo import ZoneInfo

from policies.access import AccessPolicy
from policies.masking import mask_text
from policies.notices import Notice
from services.access import AccessControl
from services.consent import ConsentService
from services.context import Actor
from services.errors import InvalidInput
from storage.store import Store

ZONE = ZoneInfo("Asia/Shanghai")
MAX_DAYS = 3660
# 《人脸识别技术应用安全管理办法》 (in force 2025-06-01): once face information of this many
# people is held, the handler files with the provincial CAC within 30 working days.
FACE_FILING_THRESHOLD = 100_000


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

    def pack(self, start: str, end: str, *, actor: Actor) -> dict[str, Any]:
        """The pack of the period as one document; `checkpoints` lists the checkpoint files
        of the period (`path`, `sha256`) for the surface to copy beside it."""
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
        reveals = [
            {
                "at": e.at.isoformat(),
                "actor": e.detail.get("actor"),
                "role": e.detail.get("role"),
                "field": e.detail.get("field"),
                "purpose": e.detail.get("purpose"),
                "reason": mask_text(str(e.detail.get("reason", ""))),
            }
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

        pack: dict[str, Any] = {
            "pack_version": 1,
            "period": {
                "from": start,
                "to": end,
                "since": since.isoformat(),
                "until": until.isoformat(),
                "zone": str(ZONE),
            },
            "generated_at": now.isoformat(),
            "generated_by": {"actor": actor.name, "role": actor.role},
            "notices": [
                {
                    "version": n.version,
                    "sha256": n.text_sha256,
                    "published": n.published.isoformat(),
                    "purposes": sorted(n.purposes),
                    "scopes": sorted(n.scopes),
                }
                for n in sorted(self.notices.values(), key=lambda n: n.published)
            ],
            "consent": {
                "by_notice": self.consent.stats(since=since, until=until).model_dump()["stats"],
                "granted": len(by_kind["consent.granted"]),
                "withdrawn": len(by_kind["consent.withdrawn"]),
                "expired": len(by_kind["consent.expired"]),
                "asks": dict(
                    Counter(str(e.detail.get("outcome")) for e in by_kind["consent.asked"])
                ),
            },
            "gate_decisions": {
                "allowed": len(by_kind["consent.allowed"]),
                "denied": len(by_kind["consent.denied"]),
                "by_scope": {
                    scope: {v: dict(c) for v, c in verdicts.items()}
                    for scope, verdicts in sorted(gate.items())
                },
            },
            "reveals": {
                "count": len(reveals),
                "by_purpose": dict(Counter(str(r["purpose"]) for r in reveals)),
                "events": reveals,
            },
            "erasures": {
                "erased": len(by_kind["subject.erased"]),
                "restricted": len(by_kind["subject.restricted"]),
            },
            "holds": {
                "placed": len(by_kind["subject.hold_placed"]),
                "by_basis": dict(
                    Counter(str(e.detail.get("basis")) for e in by_kind["subject.hold_placed"])
                ),
            },
            "subject_requests": {
                "opened": len(requests),
                "by_kind": {k: dict(c) for k, c in sorted(timeliness.items())},
            },
            "retention_purges": [
                {
                    "at": e.at.isoformat(),
                    "seq": e.seq,
                    "policy_version": e.detail.get("policy_version"),
                    "counts": e.detail.get("counts"),
                    "awaiting": e.detail.get("awaiting"),
                }
                for e in by_kind["retention.purged"]
            ],
            # People whose face a vendor processed for idv (distinct applicant refs: the safe
            # side of the threshold), in the period and in all up to its end, beside the CAC
            # filing threshold (idv keeps no face image: the vendors process them).
            "face_verification": {
                "people_in_period": self.store.face.count_people(since=since, until=until),
                "people_to_date": self.store.face.count_people(until=until),
                "filing_threshold": FACE_FILING_THRESHOLD,
                "threshold_reached": self.store.face.count_people(until=until)
                >= FACE_FILING_THRESHOLD,
                "flows": dict(Counter(str(e.detail.get("status")) for e in by_kind["face.result"])),
                "lost": len(by_kind["face.token_lost"]),
                "deleted_at_vendor": sum(
                    1 for e in by_kind["face.deleted"] if e.detail.get("deleted")
                ),
                "another_way": len(by_kind["face.another_way"]),
            },
            "key_rotations": [
                {
                    "at": e.at.isoformat(),
                    "kind": e.kind,
                    **{
                        k: v
                        for k, v in e.detail.items()
                        if k in ("active", "version", "rewrapped", "remaining")
                    },
                }
                for e in events
                if e.kind in ("keys.rotated", "keys.retired")
            ],
            "audit_chain": {
                "events_in_period": len(events),
                "first_seq": events[0].seq if events else None,
                "last_seq": events[-1].seq if events else None,
                # The chain held against the latest checkpoint: counts above taken from a
                # chain cut behind it would be short, and this says so.
                "head": {"intact": head.intact, "rule": head.rule, "events": head.events},
            },
            "checkpoints": self._checkpoints(since, until, events),
        }
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

    def _checkpoints(self, since: datetime, until: datetime, events: list[Any]) -> dict[str, Any]:
        folder = self.checkpoint_dir
        log = self.store.audit.checkpoints
        if folder is None and log is not None and log.directory is None:
            return self._stored_checkpoints(log, events)
        if folder is None or not folder.is_dir():
            return {
                "folder": None,
                "files": [],
                "note": "none: no checkpoint folder is configured"
                if folder is None
                else "none: the checkpoint folder does not exist",
            }
        files = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            at = datetime.fromtimestamp(path.stat().st_mtime, tz=ZONE)
            if since <= at < until:
                files.append(
                    {
                        "name": str(path.relative_to(folder)),
                        "path": str(path),
                        "written_at": at.isoformat(),
                        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                    }
                )
        return {
            "folder": str(folder),
            "files": files,
            "note": None if files else "none: no checkpoint was written in the period",
        }

    @staticmethod
    def _stored_checkpoints(log: Any, events: list[Any]) -> dict[str, Any]:
        """Checkpoints kept in an object store, which has no file times to go by: those
        that cover the period's events (sizes from its first event up to the first
        checkpoint at or past its last), each with its time-stamp token, their bytes
        carried for the surface to write beside the pack."""
        where = str(log.path_for(0)).rsplit("/", 1)[0]
        if not events:
            return {"folder": where, "files": [], "note": "none: no audit event in the period"}
        first, last = events[0].seq, events[-1].seq
        sizes = log.sizes()
        closing = next((n for n in sizes if n >= last), None)
        chosen = [n for n in sizes if n >= first and (closing is None or n <= closing)]
        files = []
        for size in chosen:
            note, token = log.files(size)
            for name, data in ((log.file_name(size), note), (log.file_name(size, ".tsr"), token)):
                if data is not None:
                    files.append(
                        {
                            "name": name,
                            "url": str(log.place.locate(name)),
                            "size": size,
                            "data": data,
                            "sha256": hashlib.sha256(data).hexdigest(),
                        }
                    )
        return {
            "folder": where,
            "files": files,
            "note": None if files else "none: no checkpoint covers the period yet",
        }
