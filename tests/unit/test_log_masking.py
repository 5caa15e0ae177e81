"""The logging filter on our loggers and Prefect's: identifiers never reach a handler."""

from __future__ import annotations

import io
import logging

import pytest

from flows.process import LOGGERS, MaskingFilter, install_log_masking

ID, PHONE = "11010519491231002X", "13800138000"


@pytest.fixture
def captured():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    loggers = [logging.getLogger(n) for n in ("idv.test", "prefect.flow_runs", "uvicorn")]
    # Only our capturing handler: Prefect's API handler (present once a flow has run in this
    # session) would warn outside a flow run.
    saved = {lg.name: (lg.handlers[:], lg.propagate) for lg in loggers}
    for lg in loggers:
        lg.handlers = [handler]
        lg.propagate = False
    install_log_masking()
    yield stream
    for lg in loggers:
        lg.handlers, lg.propagate = saved[lg.name]


@pytest.mark.parametrize("name", ["idv.test", "prefect.flow_runs", "uvicorn"])
def test_when_a_message_carries_identifiers_then_the_handler_sees_them_masked(captured, name):
    logging.getLogger(name).warning("applicant %s phone %s", ID, PHONE)
    out = captured.getvalue()
    assert ID not in out and PHONE not in out
    assert "*****************X" in out and "138********" in out


def test_when_an_exception_text_carries_an_identifier_then_the_traceback_is_masked(captured):
    try:
        raise ValueError(f"bad value {ID}")
    except ValueError:
        logging.getLogger("idv.test").exception("failed")
    out = captured.getvalue()
    assert ID not in out and "ValueError" in out


def test_when_masking_is_installed_then_prefect_and_our_loggers_carry_the_filter():
    install_log_masking()
    for name in ("idv", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        assert name in LOGGERS
        assert any(isinstance(f, MaskingFilter) for f in logging.getLogger(name).filters)
