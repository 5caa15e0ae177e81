"""The scheduled onboarding: take the inbox (`services.inbox`), each complete batch file run
through the onboarding flow (a subflow: the same path as `idv batch run`), once.

`idv inbox run` calls the flow by hand; the `onboarding` deployment calls it on its
schedule. Its one parameter is a folder path: never personal data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows import progress
from flows.process import install_log_masking
from flows.runtime import Runtime
from services.inbox import InboxReport, Runner


def run_onboarding(path: Path, beat: Callable[[], None]) -> dict[str, Any]:
    """One batch through the onboarding flow, renewing the file's claim at every chunk."""
    from flows.prefect_onboarding import onboarding

    with progress.watching(lambda _done: beat()):
        result: dict[str, Any] = onboarding(batch_path=str(path.resolve()))
    return result


def take_inbox(
    rt: Runtime,
    inbox: Path | None = None,
    *,
    run: Runner = run_onboarding,
    field: str = "IDV_INBOX",
    pause: Callable[[float], None] = time.sleep,
) -> InboxReport:
    """One look at the inbox (`inbox`, or `IDV_INBOX`): refused with `field` and the rule
    when it does not exist or cannot be written."""
    service = rt.services.inbox
    if inbox is None and rt.settings.inbox is None:
        # The default inbox ($IDV_HOME/inbox) is made on first use; one that is named
        # (IDV_INBOX, --inbox) must exist: a typo is not made into an empty folder.
        rt.settings.resolved_inbox.mkdir(parents=True, exist_ok=True, mode=0o700)
    box = service.open(inbox or rt.settings.resolved_inbox, field=field)
    return service.take(
        box,
        run,
        settle_s=rt.settings.inbox_settle_s,
        stale_after=timedelta(seconds=rt.settings.inbox_stale_s),
        attempts=rt.settings.inbox_attempts,
        pause=pause,
    )


@flow(name="onboarding-inbox", persist_result=False, log_prints=False)
def onboard_inbox(inbox: str | None = None) -> dict[str, Any]:
    """Run every complete batch file in the inbox once; move each to done/ or failed/."""
    install_log_masking()
    logger = get_run_logger()
    rt = Runtime.from_env()
    try:
        # Refused before any file is taken: the files stay in the inbox for the next look.
        rt.check_dependencies()
        report = take_inbox(
            rt, Path(inbox) if inbox else None, field="inbox" if inbox else "IDV_INBOX"
        )
        tally = report.tally()
        logger.info(
            "inbox %s: %d done, %d failed, %d left for the next look",
            report.inbox,
            tally["done"],
            tally["failed"],
            tally["left"],
        )
        return report.model_dump(mode="json")
    finally:
        rt.close()
