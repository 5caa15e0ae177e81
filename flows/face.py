"""The `face-sweep` deployment's flow (`face-sweep`): every face token whose redirect never came
is pulled from its vendor (`services.face.FaceService.sweep`): a verdict found is recorded, a
flow still open is left for the next run, a token past the vendor's window (3 days at Tencent)
is recorded `lost`. Tokens the sweep could not pull, and lost ones, are alerts: each an audit
event (`face.pull_failed`, `face.token_lost`, and `face.alert` for the run), a Prometheus
counter (`idv_face_pulls_failed_total`, `idv_face_tokens_lost_total`), and a Prefect event
`idv.face.alarm` (counts only) an automation routes to the pager. The figure to keep: 0 lost."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.process import install_log_masking
from flows.runtime import Runtime

EVENT = "idv.face.alarm"


def emit_alarm(report: dict[str, int]) -> bool:
    """A Prefect event when the sweep lost a token or could not pull one; whether it sent."""
    if not (report.get("lost") or report.get("failed")):
        return False
    from prefect.events import emit_event

    emit_event(
        event=EVENT,
        resource={"prefect.resource.id": "idv.face.tokens", "prefect.resource.name": "face"},
        payload={"lost": report.get("lost", 0), "failed": report.get("failed", 0)},
    )
    return True


@flow(name="face-sweep", persist_result=False, log_prints=False)
def sweep_face_tokens() -> dict[str, Any]:
    """Pull the face tokens whose redirect never came; record and alert the lost ones."""
    install_log_masking()
    logger = get_run_logger()
    rt = Runtime.from_env()
    try:
        report = rt.services.face.sweep().as_dict()
        logger.info(
            "face tokens: %d looked at, %d pulled, %d pending, %d expired, %d lost, "
            "%d not pulled, %d deleted at the vendor",
            report["looked_at"],
            report["pulled"],
            report["pending"],
            report["expired"],
            report["lost"],
            report["failed"],
            report["deleted"],
        )
        return {**report, "alarm": emit_alarm(report)}
    finally:
        rt.close()
