"""`idv compliance`."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Annotated

import typer

from idv.shell import JsonOpt, actor, compliance_app, runtime
from idv.terminal import console, emit, fail


@compliance_app.command("pack")
def compliance_pack(
    start: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD, Asia/Shanghai).")],
    end: Annotated[str, typer.Option("--to", help="Last day, included.")],
    output: Annotated[Path, typer.Option(help="A new folder for the bundle.")] = Path(
        "compliance-pack"
    ),
    as_json: JsonOpt = False,
) -> None:
    """Write the compliance-audit pack of the period: pack.json (counts, versions, hashes;
    no personal value), the audit checkpoints of the period, and manifest.json (SHA-256 of
    each file)."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        fail("--output", "must be a new or empty folder", as_json=as_json)
    from services.compliance import StoredCheckpoint

    with runtime() as rt:
        pack = rt.services.compliance.pack(start, end, actor=actor())
    try:
        output.mkdir(parents=True, exist_ok=True, mode=0o700)
        files = {}
        for cp in pack.checkpoints.files:
            dest = output / "checkpoints" / cp.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(cp, StoredCheckpoint):  # from an object store: the bytes, as read
                dest.write_bytes(cp.data)
            else:
                shutil.copyfile(cp.path, dest)
            files[f"checkpoints/{cp.name}"] = cp.sha256
        body = json.dumps(pack.model_dump(mode="json"), ensure_ascii=False, indent=2) + "\n"
        (output / "pack.json").write_bytes(body.encode("utf-8"))
        files["pack.json"] = hashlib.sha256(body.encode("utf-8")).hexdigest()
        (output / "manifest.json").write_text(
            json.dumps(
                {
                    "period": pack.period.model_dump(mode="json"),
                    "files": dict(sorted(files.items())),
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
    except OSError:
        fail("--output", "cannot be written", as_json=as_json)
    summary = {
        "output": str(output),
        "events": pack.audit_chain.events_in_period,
        "checkpoints": len(pack.checkpoints.files),
        "subject_requests": pack.subject_requests.opened,
    }
    if as_json:
        emit(summary)
    else:
        console.print(
            f"compliance pack {start}..{end} written to {output}: "
            f"{summary['events']} audit events, {summary['checkpoints']} checkpoints"
        )
