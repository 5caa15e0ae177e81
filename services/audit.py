"""The audit chain, checked end to end, and a subject's proof bundle for a third party."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from policies.vocabulary import ApplicantRef
from services.access import AccessControl
from services.context import Actor
from services.errors import Conflict, InvalidInput, NotFound, from_validation
from storage.bindings import BindingError
from storage.checkpoints import CheckpointError
from storage.crypto import digest
from storage.store import Store

BUNDLE_FORMAT = "idv-proof-bundle-1"
Digest = Literal["sha256", "sm3"]


class ChainCheck(BaseModel):
    model_config = ConfigDict(frozen=True)

    intact: bool
    broken_at: int | None
    events: int
    checkpoints: int = 0
    base_seq: int = 0
    rule: str | None = None
    file: str | None = None
    # The first consent, decision or step result that does not match the chain.
    record_table: str | None = None
    record: str | None = None
    records: int = 0


class ProofBundle(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    records: int
    events: int
    checkpoints: int
    digests: tuple[str, ...]


class TrailQuery(BaseModel):
    """The audit trail narrowed: by subject, by the actor an event names, by kind (a prefix:
    `case.`, `subject.erased`), by time (`since` included, `until` excluded); `before` a
    sequence number for the next page."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    applicant_ref: ApplicantRef | None = None
    actor: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@:-]{1,120}$")] | None = None
    kind: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.]{0,63}$")] | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: int | None = Field(None, ge=1)
    limit: int = Field(50, ge=1, le=500)


class TrailEvent(BaseModel):
    """One event of the trail as the chain holds it (its detail carries codes, hashes and
    masked text, never a personal value), and whether its MAC holds."""

    model_config = ConfigDict(frozen=True)

    seq: int
    at: str
    kind: str
    subject_ref: str | None
    actor: str | None
    role: str | None
    detail: dict[str, Any]
    authentic: bool


class TrailPage(BaseModel):
    model_config = ConfigDict(frozen=True)

    events: list[TrailEvent]
    # The next page: `before` this sequence number (None: nothing older matches).
    next_before: int | None


class AuditService:
    """Reading the chain needs `audit_read`, a subject's proof bundle `audit_export`
    (`policies/access.yaml`); a refusal is audited before anything is read."""

    def __init__(self, store: Store, access: AccessControl) -> None:
        self.store = store
        self.access = access

    def check_chain(self, *, actor: Actor) -> ChainCheck:
        """Every event's MAC and link, every checkpoint, then every binding of a consent,
        decision or step result; `broken_at` is the first sequence number that cannot be
        trusted, `rule` and `file` / `record` say why and where."""
        self.access.require(actor, "audit_read", operation="audit.verify")
        found = self.store.proofs.check()
        c, b = found.chain, found.binding
        return ChainCheck(
            intact=found.intact,
            broken_at=c.broken_at if b is None else b.seq,
            events=c.events,
            checkpoints=c.checkpoints,
            base_seq=c.base_seq,
            rule=c.rule if b is None else b.rule,
            file=c.file,
            record_table=b.table if b else None,
            record=b.record if b else None,
            records=found.records,
        )

    def trail(self, query: TrailQuery | dict[str, Any], *, actor: Actor) -> TrailPage:
        """The audit trail, newest first, narrowed by `query`; needs `audit_read`. A time
        without a zone is UTC."""
        self.access.require(actor, "audit_read", operation="audit.trail")
        if not isinstance(query, TrailQuery):
            try:
                query = TrailQuery.model_validate(query)
            except ValidationError as exc:
                raise from_validation(exc) from None

        def utc(at: datetime | None) -> datetime | None:
            if at is None:
                return None
            return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)

        rows = self.store.audit.trail(
            subject_ref=query.applicant_ref,
            actor=query.actor,
            kind_prefix=query.kind,
            since=utc(query.since),
            until=utc(query.until),
            before_seq=query.before,
            limit=query.limit,
        )
        events = [
            TrailEvent(
                seq=e.seq,
                at=e.at.isoformat(),
                kind=e.kind,
                subject_ref=e.subject_ref,
                actor=e.detail.get("actor") if isinstance(e.detail.get("actor"), str) else None,
                role=e.detail.get("role") if isinstance(e.detail.get("role"), str) else None,
                detail=dict(e.detail),
                authentic=ok,
            )
            for e, ok in rows
        ]
        more = len(events) == query.limit and events[-1].seq > 1
        return TrailPage(events=events, next_before=events[-1].seq if more else None)

    def checkpoint_key(self, *, actor: Actor) -> str:
        """The checkpoint verifier key to publish (`<name>+<key id>+<base64>`): what a third
        party checks a proof bundle against (`proofcheck.py --key`). Needs `audit_read`."""
        self.access.require(actor, "audit_read", operation="audit.checkpoint_key")
        log = self.store.audit.checkpoints
        if log is None or log.key is None:
            raise Conflict("checkpoints", "no checkpoint key is configured")
        return log.key.verifier_key

    def checkpoint_exposure(self) -> str | None:
        """Why the checkpoints could be deleted or replaced by the user idv runs as (who can
        also write the database), so that a rollback of both goes unseen: what `idv doctor`
        warns of and production refuses (`CheckpointLog.exposure`). None when they cannot
        (an append-only folder, an object store with conditional writes)."""
        log = self.store.audit.checkpoints
        if log is None:
            return "no checkpoint log is configured: nothing outside the database witnesses it"
        return log.exposure()

    def export_proof(
        self,
        applicant_ref: str,
        dest: Path,
        *,
        verifier: Path,
        actor: Actor,
        digests: tuple[Digest, ...] = ("sha256",),
    ) -> ProofBundle:
        """Write `dest` (a new folder): the subject's bound records, the events binding them
        and the chain from each to the checkpoint covering it, those checkpoints and their
        time-stamp tokens, the checkpoint public key and the verifier script (`verifier`,
        standard library and `cryptography` only). No personal value goes in: records are
        codes, references and hashes. Refused when the chain or the subject's records do not
        verify: a bundle vouches only for what is intact."""
        self.access.require(actor, "audit_export", operation="audit.export_proof")
        log = self.store.audit.checkpoints
        if log is None:
            raise Conflict("checkpoints", "no checkpoint log is configured")
        if dest.exists():
            raise InvalidInput("dest", "must not exist yet")
        if "sha256" not in digests:
            raise InvalidInput("digest", "sha256 is always included")
        try:
            grants = self.store.ledger.grants_for(applicant_ref)
            if self.store.applicants.get(applicant_ref) is None and not grants:
                raise NotFound("applicant_ref", "nothing is held about this subject")
            # A bundle vouches only for records the chain binds: none of a subject whose
            # consent records were altered, forged or lost (a withdrawal deleted, say).
            if any(not g.bound for g in grants):
                raise Conflict(
                    "applicant_ref",
                    "consent_events: the subject's consent records are not the ones the "
                    "audit chain recorded",
                )
            self.store.cases.case_of(applicant_ref)
        except BindingError as exc:
            raise Conflict("applicant_ref", f"{exc.table}: {exc.rule}") from None
        try:
            self.store.audit.checkpoint()  # so that every event of the subject is covered
            check = self.store.audit.check()
        except CheckpointError as exc:
            raise Conflict("checkpoints", f"{exc.path}: {exc.rule}") from None
        if not check.intact:
            raise Conflict("audit_chain", f"broken at {check.broken_at}: {check.rule}")
        material = self.store.proofs.material(applicant_ref, tuple(digests))
        dest.mkdir(parents=True, mode=0o700)
        (dest / "checkpoints").mkdir()
        for seg in material.segments:
            try:
                note, token = log.files(seg["size"])
            except CheckpointError as exc:
                raise Conflict("checkpoints", f"{exc.path}: {exc.rule}") from None
            (dest / "checkpoints" / log.file_name(seg["size"])).write_bytes(note)
            if token is not None:
                (dest / "checkpoints" / log.file_name(seg["size"], ".tsr")).write_bytes(token)
        if log.stamper is not None:
            (dest / "tsa.pem").write_bytes(log.stamper.certificate_pem)
        (dest / "checkpoint.vkey").write_text(
            log.key.verifier_key + "\n" if log.key else "", encoding="utf-8"
        )
        (dest / "origin.txt").write_text(log.origin + "\n", encoding="utf-8")
        if log.key is None:
            raise Conflict("checkpoints", "no checkpoint key is configured")
        # Which events go in whole, signed with the checkpoint key: none can be passed off
        # as a bare leaf hash.
        (dest / "subject.note").write_text(
            log.key.sign(material.index(log.origin, applicant_ref)), encoding="utf-8"
        )
        _dump(dest / "records.json", material.records)
        _dump(dest / "chain.json", material.segments)
        shutil.copyfile(verifier, dest / "proofcheck.py")
        (dest / "README.txt").write_text(README, encoding="utf-8")
        files = sorted(p for p in dest.rglob("*") if p.is_file())
        manifest = {
            "format": BUNDLE_FORMAT,
            "applicant_ref": applicant_ref,
            "created_at": datetime.now(UTC).isoformat(),
            "digests": list(digests),
            "link": "sha256(b'idv audit link v1\\n' || previous link || sha256(event body))",
            "files": {
                str(p.relative_to(dest)): {d: digest(d, p.read_bytes()) for d in digests}
                for p in files
            },
        }
        _dump(dest / "manifest.json", manifest)
        return ProofBundle(
            path=str(dest),
            records=len(material.records),
            events=sum(len(s["entries"]) for s in material.segments),
            checkpoints=len(material.segments),
            digests=tuple(digests),
        )


def _dump(path: Path, doc: object) -> None:
    path.write_text(
        json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8"
    )


README = """A proof bundle of idv's audit chain for one subject.

Verify it, with Python 3.11+ and the `cryptography` package only, and no access to idv's
database:

    python proofcheck.py . --key KEY [--tsa-cert TSA.pem]

KEY is the checkpoint key the operator published (not checkpoint.vkey: whoever made the
bundle could have made that too); TSA.pem the time-stamping authority you trust.

It checks: every file against manifest.json (SHA-256, and SM3 when listed); every checkpoint
(checkpoints/*.ckpt, C2SP signed notes) against the Ed25519 key in checkpoint.vkey; each
record in records.json (its canonical JSON hashed again) against the hash that its audit
event holds, and each of the subject's events that binds a record with its record (or the
event that purged it); each event, with the leaf hashes of the events between, linked up to
the signed root of the checkpoint covering it (chain.json), and every event the signed
subject index (subject.note) lists given in whole; and each RFC 3161 time-stamp token
(checkpoints/*.tsr), when present and a trusted authority is given: over its checkpoint
file and signed by that authority (or by one it certifies). It exits 0 when everything
holds. tsa.pem is the authority the operator used, for reference.
"""
