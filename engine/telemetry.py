"""`runtime.tracing`: every task-history row exported as an OpenTelemetry span over OTLP/HTTP,
with the standard SDK's batch processor and exporter. A span keeps the row's trace, span and
parent ids, times, principal, model, tokens, cost and error code; text is the row's (redacted
SQL, or a prompt's sha256 unless the pod captures prompts)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from .task_history import Task

log = logging.getLogger("satchel.telemetry")
_SCOPE = InstrumentationScope("satchel")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
EXPORT_TIMEOUT_S = 2.0


class OtlpSpans:
    """A task-history observer sending each task as a span to `endpoint` (`<endpoint>/v1/traces`)."""

    def __init__(self, endpoint: str, service_name: str, headers: Mapping[str, str] | None = None) -> None:
        self.resource = Resource.create({"service.name": service_name})
        # a short export timeout: a collector that hangs must not hold the shutdown past its bound
        exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces", headers=dict(headers or {}),
                                    timeout=EXPORT_TIMEOUT_S)
        self.processor = BatchSpanProcessor(exporter, schedule_delay_millis=1000,
                                            export_timeout_millis=int(EXPORT_TIMEOUT_S * 1000))

    def __call__(self, task: Task) -> None:
        trace_id = int(task.trace_id, 16)
        context = SpanContext(trace_id, int(task.span_id, 16), is_remote=False, trace_flags=_SAMPLED)
        parent = (SpanContext(trace_id, int(task.parent_id, 16), is_remote=False, trace_flags=_SAMPLED)
                  if task.parent_id else None)
        start = int(task.started_at.timestamp() * 1e9)
        end = start + int((task.duration_ms or 0) * 1e6)
        attributes = {k: v for k, v in {
            "satchel.task": task.task, "satchel.protocol": task.protocol, "enduser.id": task.principal,
            "satchel.text": task.query_text, "satchel.datasets": list(task.datasets or ()),
            "satchel.served_by": task.served_by, "satchel.rows": task.rows, "satchel.error_code": task.error_code,
            "gen_ai.request.model": task.model, "gen_ai.usage.input_tokens": task.input_tokens,
            "gen_ai.usage.output_tokens": task.output_tokens, "satchel.cost": task.cost,
            "satchel.ttft_ms": task.ttft_ms, "satchel.prompt_hash": task.prompt_hash,
        }.items() if v is not None}
        status = Status(StatusCode.ERROR, task.error_code or "error") if task.error else Status(StatusCode.OK)
        self.processor.on_end(ReadableSpan(
            name=task.task, context=context, parent=parent, resource=self.resource, attributes=attributes,
            kind=SpanKind.SERVER if parent is None else SpanKind.INTERNAL, status=status, start_time=start,
            end_time=end, instrumentation_scope=_SCOPE))

    def close(self) -> None:
        """Send what is queued (bounded by EXPORT_TIMEOUT_S) and stop."""
        try:
            self.processor.shutdown()
        except Exception:  # noqa: BLE001 - a collector that is gone must not hold the shutdown
            log.warning("could not flush the last spans to the OTLP endpoint")
