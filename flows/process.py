"""How a process that runs flows or answers requests sets itself up once: its start-up heap
settled out of the collector's sight, the GIL handed between threads sooner when serving,
and every log line masked before any handler formats it.
"""

from __future__ import annotations

import gc
import logging
import sys

from policies.masking import mask_text

# The collector's thresholds in a process that settled its heap: young collections every
# 10,000 allocations rather than 700, full ones rare (a worker runs one after each chunk).
GC_THRESHOLDS = (10_000, 20, 1_000)
_heap_settled = False


def settle_heap() -> None:
    """Once per process, when what it keeps for its life is loaded (libraries, GX, policies,
    keys: hundreds of thousands of objects): collect, then move everything alive out of the
    collector's sight with `gc.freeze`, and space collections out. Without it, every full
    collection walks those objects again (about 0.3 s each, some every second under load):
    a sixth of a batch worker's time, and a request caught behind one waits that long."""
    global _heap_settled
    if _heap_settled:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    _heap_settled = True


# How long a thread holding the GIL runs before one waiting for it is let in (Python's
# default is 5 ms). A serving process passes each request between threads (the server's
# loop, the on-demand engine's, the journal's) several times; at the default, a request
# behind a busy thread waits up to 5 ms at each hand-over.
SERVING_SWITCH_INTERVAL_S = 0.001


def settle_for_serving() -> None:
    """A process that answers requests: its heap settled (`settle_heap`) and the GIL handed
    between its threads at `SERVING_SWITCH_INTERVAL_S`."""
    settle_heap()
    sys.setswitchinterval(SERVING_SWITCH_INTERVAL_S)


class MaskingFilter(logging.Filter):
    """Masks ID numbers, phones and card numbers in a record's message and exception text.

    Installed on the handlers of the root logger, ours and Prefect's, so a value
    that slips into a log line is masked before any handler (console, Prefect's
    API log handler) formats it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed %-format must not leak the raw args
            message = str(record.msg)
        record.msg = mask_text(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            formatter = logging.Formatter()
            record.exc_text = mask_text(formatter.formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


_FILTER = MaskingFilter()
LOGGERS = (
    "",
    "idv",
    "prefect",
    "prefect.flow_runs",
    "prefect.task_runs",
    "prefect.server",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "aiohttp",
    "httpx",
)


def install_log_masking() -> None:
    """Attach the masking filter to every handler of our loggers and Prefect's (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
