"""`idv keys`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from idv.shell import (
    MOVED,
    JsonOpt,
    actor,
    keys_app,
    moved,
    runtime,
)
from idv.terminal import (
    console,
    emit,
    progress_bar,
)


@keys_app.command("init")
def keys_init(
    production: Annotated[
        bool,
        typer.Option(
            "--production",
            help="Mark the key as fit for production (IDV_ENV=production refuses others).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create the local KEK file (mode 0600), and the audit checkpoints' signing key beside
    it if there is none. Refuses to overwrite a KEK file."""
    from flows.settings import Settings
    from services.keys import create_checkpoint_key, create_key_file

    settings = Settings()
    path = create_key_file(settings.resolved_key_file, production=production)
    checkpoint = create_checkpoint_key(settings.resolved_checkpoint_key_file)
    if as_json:
        emit(
            {
                "key_file": str(path),
                "production": production,
                "checkpoint_key_file": str(checkpoint) if checkpoint else None,
            }
        )
    else:
        console.print(f"key file created: {path} (mode 0600)")
        if checkpoint:
            console.print(
                f"checkpoint key created: {checkpoint} (mode 0600; keep it out of "
                "the database's reach and out of data backups)"
            )


@keys_app.command("status")
def keys_status(as_json: JsonOpt = False) -> None:
    """KEK versions, their state, and how many keys each wraps."""
    with runtime() as rt:
        status = rt.services.keys.status(actor=actor())
    if as_json:
        emit(status.model_dump())
        return
    table = Table(title=f"Key ring (active: {status.active})")
    for col in ("version", "state", "wraps"):
        table.add_column(col)
    for v in status.versions:
        table.add_row(v.version, v.state, str(v.wraps))
    console.print(table)
    console.print(f"destroyed subject keys (erased): {status.destroyed_subject_keys}")


@keys_app.command("rotate")
def keys_rotate(
    batch_size: Annotated[
        int, typer.Option(min=1, max=100_000, help="DEKs rewrapped per transaction.")
    ] = 500,
    as_json: JsonOpt = False,
) -> None:
    """Add a KEK version and rewrap every DEK under it, without downtime; rerun to resume."""
    with runtime() as rt:
        keys = rt.services.keys
        total = keys.pending(actor=actor())
        with progress_bar("rewrapping", enabled=not as_json, unit="keys") as update:
            report = keys.rotate(
                batch_size=batch_size, actor=actor(), on_batch=lambda done: update(done, total)
            )
    if as_json:
        emit(report.model_dump())
    else:
        console.print(
            f"KEK {report.active} active: {report.rewrapped} keys rewrapped, "
            f"{report.remaining} remaining"
        )


@keys_app.command("retire")
def keys_retire(version: str, as_json: JsonOpt = False) -> None:
    """Retire an old KEK version; refused while anything is wrapped under it."""
    with runtime() as rt:
        rt.services.keys.retire(version, actor=actor())
    if as_json:
        emit({"retired": version})
    else:
        console.print(f"KEK {version} retired")


@keys_app.command("schedule", hidden=True, context_settings=MOVED)
def keys_schedule() -> None:
    """Moved: the key-rotation schedule is data now (see `idv schedule`)."""
    moved("key-rotation")
