"""The `idv` commands, one module per group; importing them registers them on `idv.shell.app`."""

from idv.commands import (  # noqa: F401
    accounts,
    batches,
    cases,
    compliance,
    consent,
    court_list,
    doctor,
    fees,
    inbox,
    keys,
    requests,
    retention,
    review,
    risk,
    schedules,
    serving,
    subjects,
    users,
)
