"""Tracing that cannot carry personal data out: off unless the operator turns it on
(`IDV_OTEL=1` with the standard `OTEL_EXPORTER_OTLP_*` variables), and then every span
passes a scrubbing processor before any exporter sees it.

Why a processor of our own: as soon as a tracer provider is set, Prefect (3.1.12 and later;
`prefect.telemetry.run_telemetry`) opens a span per flow and task run carrying the run's
name, its labels, one attribute per parameter, and events holding each state's message,
which for a failed run is the exception's text; its switch
(`PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY`) still leaves a root span (PrefectHQ
#17190). So the processor keeps only the attributes on `ALLOWED` (run type and id, state
type and name, HTTP method, route template and status, an exception's type), replaces a
run's span name with `prefect.flow` / `prefect.task`, and drops status descriptions. What is
not on the list is dropped, whatever a library adds tomorrow.

`configure()` is called once per process by idv's start-up (`flows/__init__`), so flow run
processes on a worker scrub too.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any

ALLOWED = frozenset(
    {
        "prefect.run.type",
        "prefect.run.id",
        "prefect.state.type",
        "prefect.state.name",
        "prefect.state.id",
        "http.request.method",
        "http.method",
        "http.route",
        "http.response.status_code",
        "http.status_code",
        "exception.type",
        "service.name",
    }
)
# A span name that is not a run's is kept only if it is a word, a route template or a
# method and a template: no four digits in a row (a number of a person), no UUID.
_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/{} -]{0,79}$")
_DIGITS = re.compile(r"[0-9]{4}|[0-9a-fA-F]{8}-")
_configured = threading.Lock()
_provider: Any = None


def scrub_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """The attributes on `ALLOWED`, the rest dropped."""
    return {k: v for k, v in (attributes or {}).items() if k in ALLOWED}


def scrub_name(name: str, attributes: Mapping[str, Any] | None) -> str:
    """A run's span as `prefect.<type>` (its name is a run name a template may have made
    from parameters); another span's name if it is safe, else `span`."""
    run_type = (attributes or {}).get("prefect.run.type")
    if isinstance(run_type, str):
        return "prefect.flow" if run_type == "flow" else "prefect.task"
    if _SAFE_NAME.match(name) and not _DIGITS.search(name):
        return name
    return "span"


def scrub(span: Any) -> Any:
    """A copy of a finished span (`ReadableSpan`) with only what `ALLOWED` names."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Link, Status

    events = [
        Event(
            e.name if e.name == "exception" else "state",
            scrub_attributes(e.attributes),
            e.timestamp,
        )
        for e in span.events
    ]
    return ReadableSpan(
        name=scrub_name(span.name, span.attributes),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=scrub_attributes(span.attributes),
        events=events,
        links=[Link(link.context, scrub_attributes(link.attributes)) for link in span.links],
        kind=span.kind,
        status=Status(span.status.status_code),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def scrubbing_processor(inner: Any) -> Any:
    """`inner` (a span processor: the exporter's batch processor) fed scrubbed spans only."""
    from opentelemetry.sdk.trace import SpanProcessor

    class ScrubbingSpanProcessor(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            # The exporter's processor is not shown the live span: it sees it at the end,
            # scrubbed.
            return None

        def on_end(self, span: Any) -> None:
            inner.on_end(scrub(span))

        def shutdown(self) -> None:
            inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return bool(inner.force_flush(timeout_millis))

    return ScrubbingSpanProcessor()


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the operator turned tracing on (`IDV_OTEL=1`)."""
    return (os.environ if environ is None else environ).get("IDV_OTEL", "") in ("1", "true")


def configure(exporter: Any = None, *, environ: Mapping[str, str] | None = None) -> Any:
    """Once per process: when `IDV_OTEL=1`, a tracer provider (service `OTEL_SERVICE_NAME`,
    default `idv`) whose only processor scrubs each span and hands it to `exporter` (the
    OTLP/HTTP exporter the `OTEL_EXPORTER_OTLP_*` variables configure, unless one is
    given) in batches; the provider, or None when tracing is off."""
    global _provider
    env = os.environ if environ is None else environ
    if not enabled(env):
        return None
    with _configured:
        if _provider is not None:
            return _provider
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        provider = TracerProvider(
            resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "idv")})
        )
        provider.add_span_processor(scrubbing_processor(BatchSpanProcessor(exporter)))
        trace.set_tracer_provider(provider)
        _provider = provider
        return provider
