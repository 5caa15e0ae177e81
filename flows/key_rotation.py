"""Key rotation as a Prefect flow: the `key-rotation` deployment (`flows.deployments`)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.process import install_log_masking
from flows.runtime import Runtime
from services.context import Actor


@flow(name="key-rotation", persist_result=False, log_prints=False)
def rotate_keys(batch_size: int = 500) -> dict[str, Any]:
    """Add a KEK version and rewrap every DEK under it (or resume one that stopped)."""
    install_log_masking()
    logger = get_run_logger()
    rt = Runtime.from_env()
    try:
        report = rt.services.keys.rotate(
            batch_size=batch_size, actor=Actor(name="key-rotation flow", role="operator")
        )
        logger.info(
            "KEK %s active: %d keys rewrapped, %d remaining",
            report.active,
            report.rewrapped,
            report.remaining,
        )
        return {
            "active": report.active,
            "rewrapped": report.rewrapped,
            "remaining": report.remaining,
        }
    finally:
        rt.close()
