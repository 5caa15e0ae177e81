"""The retention purge as a Prefect flow: the `retention` deployment (`flows.deployments`).

Removes what is past its ceiling (`services.retention`), audited as `retention.purged`; its
artifact is a table of counts by record class, nothing else.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.process import install_log_masking
from flows.runtime import Runtime
from services.context import Actor


@flow(name="retention-purge", persist_result=False, log_prints=False)
def purge_retention() -> dict[str, Any]:
    """Purge every record past its class's ceiling (none under a legal hold)."""
    install_log_masking()
    logger = get_run_logger()
    rt = Runtime.from_env()
    try:
        report = rt.services.retention.purge(actor=Actor(name="retention flow", role="operator"))
        counts, awaiting = report.counts, report.awaiting
        create_table_artifact(
            key="retention-purge",
            description="Records purged, by class (counts only)",
            table=[{"class": c, "purged": n} for c, n in counts.items()]
            + [{"class": c, "purged": 0, "awaiting": n} for c, n in awaiting.items()],
        )
        logger.info(
            "retention %s: %d records purged (%s)",
            report.policy_version,
            sum(counts.values()),
            ", ".join(f"{c} {n}" for c, n in counts.items()),
        )
        return {"counts": counts, "awaiting": awaiting, "audit_seq": report.audit_seq}
    finally:
        rt.close()
