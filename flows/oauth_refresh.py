"""Token upkeep as a Prefect flow, the `oauth-refresh` deployment (`flows.deployments`):
refresh access tokens before they expire, purge the tokens of accounts whose refresh token
died (they ask the applicant to authorize again), drop spent authorization states."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.process import install_log_masking
from flows.runtime import Runtime


@flow(name="oauth-refresh", persist_result=False, log_prints=False)
def refresh_oauth_tokens() -> dict[str, int]:
    install_log_masking()
    logger = get_run_logger()
    rt = Runtime.from_env()
    try:
        counts = rt.services.oauth.refresh_due()
        counts["states_dropped"] = rt.store.oauth.purge_states()
        logger.info(
            "oauth tokens: %d refreshed, %d need re-authorization, %d failed",
            counts["refreshed"],
            counts["reauth_required"],
            counts["failed"],
        )
        return counts
    finally:
        rt.close()
