"""Tracing cannot carry personal data out: real Prefect flow and task runs (the session's
harness) with an in-memory exporter behind the scrubbing processor. Their parameters,
labels, names and failure messages hold canaries; the exported spans hold none, while the
same spans seen without the processor do (so the check can fail)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from flows.tracing import ALLOWED, scrub_name, scrubbing_processor

CANARY_ID = "11010519491231002X"
CANARY_REF = "A-000123"
CANARY_NAME = "张伟"


def dump(span) -> str:
    """Everything an exporter could send of a span, as text."""
    return json.dumps(
        {
            "name": span.name,
            "attributes": dict(span.attributes or {}),
            "events": [(e.name, dict(e.attributes or {})) for e in span.events],
            "links": [dict(link.attributes or {}) for link in span.links],
            "status": span.status.description,
        },
        ensure_ascii=False,
        default=str,
    )


@pytest.fixture(scope="module")
def exported():
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    scrubbed, raw = InMemorySpanExporter(), InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(scrubbing_processor(SimpleSpanProcessor(scrubbed)))
    provider.add_span_processor(SimpleSpanProcessor(raw))  # the control: no scrubbing
    trace.set_tracer_provider(provider)
    yield scrubbed, raw
    provider.shutdown()


def test_no_exported_span_holds_a_canary_or_a_parameter_value(prefect_harness, exported):
    from prefect import flow, tags, task

    scrubbed, raw = exported

    @task(name=f"look-up-{CANARY_REF}")
    def look_up(id_number: str, name: str) -> int:
        if name == CANARY_NAME:
            raise ValueError(f"no record for {id_number} {name}")
        return 1

    @flow(flow_run_name=f"verify-{CANARY_ID}", log_prints=False)
    def verify(applicant_ref: str, id_number: str, name: str) -> None:
        look_up(id_number, "someone")
        look_up(id_number, name)

    with tags(CANARY_REF):
        verify(CANARY_REF, CANARY_ID, CANARY_NAME, return_state=True)
    spans = scrubbed.get_finished_spans()
    assert {s.name for s in spans} >= {"prefect.flow", "prefect.task"}
    for span in spans:
        text = dump(span)
        for canary in (CANARY_ID, CANARY_REF, CANARY_NAME, "no record for"):
            assert canary not in text, f"span {span.name} holds a canary"
        assert set(span.attributes or {}) <= ALLOWED
        assert span.status.description is None
    # The control: Prefect's own spans do carry them (run names, tags, failure messages).
    everything = " ".join(dump(s) for s in raw.get_finished_spans())
    assert CANARY_ID in everything and CANARY_REF in everything
    assert "no record for" in everything
    assert any(
        k.startswith("prefect.run.parameter.")
        for s in raw.get_finished_spans()
        for k in (s.attributes or {})
    )


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("GET /subjects/{applicant_ref}/decision", True),
        ("connect", True),
        (f"GET /subjects/{CANARY_REF}/decision", False),
        (f"query {CANARY_ID}", False),
        ("0f8fad5b-d9cb-469f-a165-70867728950e", False),
    ],
)
def test_a_span_name_is_kept_only_when_it_holds_no_number_or_id(name, kept):
    assert (scrub_name(name, {}) == name) is kept


@pytest.mark.subprocess
def test_tracing_is_off_and_the_usage_heartbeat_is_off_by_default():
    """A process that imports idv's flows, as a worker's flow run does, with nothing set:
    no tracer provider is installed and Prefect's telemetry check says off."""
    code = (
        "import os; os.environ.pop('DO_NOT_TRACK', None); os.environ.pop('IDV_OTEL', None)\n"
        "import flows\n"
        "from opentelemetry import trace\n"
        "from prefect._internal.analytics.enabled import is_telemetry_enabled\n"
        "print(type(trace.get_tracer_provider()).__name__, os.environ['DO_NOT_TRACK'],"
        " is_telemetry_enabled())"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("CI", "DO_NOT_TRACK")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    assert out == ["ProxyTracerProvider", "1", "False"]
