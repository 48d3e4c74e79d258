"""OtlpReceiverDouble: a test double of an OpenTelemetry collector's OTLP/HTTP traces endpoint
(no collector binary runs here). It speaks the real protocol: `POST /v1/traces` with an
`ExportTraceServiceRequest` protobuf, decoded with the official `opentelemetry-proto` classes,
answered with an `ExportTraceServiceResponse`, so the SDK's real exporter talks to it."""

from __future__ import annotations

import http.server
import threading
import time
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    start_ns: int
    end_ns: int
    status_code: int
    attributes: dict = field(default_factory=dict)
    service_name: str | None = None


def _value(v) -> object:  # noqa: ANN001 - an AnyValue message
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


class OtlpReceiverDouble:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest.FromString(body)
                outer._add(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)
        self._thread.start()

    def _add(self, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            self.requests += 1
            for rs in request.resource_spans:
                service = {a.key: _value(a.value) for a in rs.resource.attributes}.get("service.name")
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append(ReceivedSpan(
                            s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex() or None,
                            s.start_time_unix_nano, s.end_time_unix_nano, s.status.code,
                            {a.key: _value(a.value) for a in s.attributes}, service))

    def wait_for(self, span_ids: set[str], timeout: float = 20) -> dict[str, ReceivedSpan]:
        """The received spans with these ids, waiting up to `timeout` for all of them."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                got = {s.span_id: s for s in self.spans if s.span_id in span_ids}
            if len(got) == len(span_ids) or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
