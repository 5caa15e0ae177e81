"""The `idv` commands, one module per group; importing them registers them on `idv.shell.app`."""

from idv.commands import (  # noqa: F401
    accounts,
    batches,
    consent,
    fees,
    keys,
    review,
    risk,
    serving,
    subjects,
)
