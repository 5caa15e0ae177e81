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
        done = rt.services.oauth.refresh_due()
        dropped = rt.store.oauth.purge_states()
        logger.info(
            "oauth tokens: %d refreshed, %d need re-authorization, %d failed",
            done.refreshed,
            done.reauth_required,
            done.failed,
        )
        return {**done.model_dump(), "states_dropped": dropped}
    finally:
        rt.close()
