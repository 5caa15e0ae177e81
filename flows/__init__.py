"""Prefect flows and the runtime a flow run assembles from its environment.

Importing the package sets what every process running our flows needs before its first
flow run, whoever started it (`idv`, a Prefect worker's flow run process, a script):
Prefect's usage heartbeat off (`DO_NOT_TRACK=1`, unless the environment says otherwise),
and tracing, when the operator turns it on (`IDV_OTEL=1`), behind the scrubbing processor
(`flows.tracing`)."""

import os

os.environ.setdefault("DO_NOT_TRACK", "1")

from flows.tracing import configure as _configure_tracing  # noqa: E402 - after the switch

_configure_tracing()
