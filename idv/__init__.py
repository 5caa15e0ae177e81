"""idv: consent-gated identity verification. This package is the composition root.

Prefect's usage heartbeat is off in every process the `idv` command is (and so in each it
starts): `DO_NOT_TRACK=1` before Prefect is imported, unless the environment sets it."""

import os

os.environ.setdefault("DO_NOT_TRACK", "1")

__version__ = "0.1.0"
