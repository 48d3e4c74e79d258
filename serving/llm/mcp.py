"""MCP server (the `mcp` SDK): Streamable HTTP at /v1/mcp on the HTTP app, and stdio via
`satchel mcp`. Tools: list_datasets, describe_dataset, query (read-only, row and character
caps, truncated flag), search (by meaning), all annotated read-only. Every call is a task_history row."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from mcp.server.mcpserver import Context

from engine import tracing
from engine.errors import InternalError, SatchelError
from engine.redact import public_message
from engine.runtime import Principal, Runtime
from engine.task_history import DESCRIPTION as TASK_HISTORY_DESCRIPTION
from engine.task_history import Task, request_scope

from .data_tools import DataTools

MAX_ROWS = 100
MAX_CHARS = 20_000
MCP_PRINCIPAL = Principal("mcp")
log = logging.getLogger("satchel.mcp")


def instructions(runtime: Runtime) -> str:
    """The datasets and views with their descriptions, from the pod alone: built when the HTTP
    app is, before any source is contacted (no schema inference here)."""
    lines = [f"Satchel data sidecar for pod '{runtime.pod.name}'. Read-only SQL (PostgreSQL dialect) over these "
             "datasets; call describe_dataset for columns, then query."]
    for item in (*runtime.pod.datasets, *runtime.pod.views):
        lines.append(f"- {item.name}: {item.description or '(no description)'}")
    lines.append(f"- runtime.task_history: {TASK_HISTORY_DESCRIPTION}")
    return "\n".join(lines)


def create_mcp_server(runtime: Runtime, principal: Principal = MCP_PRINCIPAL, protocol: str = "mcp") -> Any:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp_types import ToolAnnotations

    tools = DataTools(runtime, max_rows=MAX_ROWS, max_bytes=MAX_CHARS)
    server = MCPServer(name="satchel", instructions=instructions(runtime))
    read_only = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                                open_world_hint=False)

    def caller(ctx: Any) -> Principal:
        """The HTTP route's authenticated principal (API key), else the server's own."""
        try:
            request = ctx.request_context.request
            return getattr(request.state, "principal", None) or principal
        except Exception:
            return principal

    def recorded(name: str, args: dict, fn, who: Principal = principal) -> str:  # type: ignore[no-untyped-def]
        """Run one tool call as one request: a task-history row, a failure metric (unless the
        query it ran already counted one) and, on failure, the stable code and message. The
        result is compact JSON text: the SDK would indent a dict, which more than doubled a
        query result's characters (and so the model's tokens) past the caps the tools keep."""
        span = tracing.new_span()
        task = Task("mcp", protocol, who.name, f"{name} {json.dumps(args, default=str)}"[:4096],
                    tool_calls=[name]).in_span(span)
        with request_scope() as scope, tracing.within(span):
            try:
                result = fn()
                if isinstance(result, dict):
                    task.rows, task.truncated = result.get("row_count"), bool(result.get("truncated"))
                return json.dumps(result, separators=(",", ":"), ensure_ascii=False, default=str)
            except Exception as e:  # the model reads the stable code and the message, as on every protocol
                error = e if isinstance(e, SatchelError) else InternalError(f"internal error in tool {name}; "
                                                                            "see the server log")
                if not isinstance(e, SatchelError):
                    log.error("internal error in MCP tool %s", name, exc_info=e)
                if scope.rows == 0:
                    runtime.metrics.query_failures.labels(protocol, error.code).inc()
                task.error, task.error_code = error.message, error.code
            finally:
                task.duration_ms = (time.monotonic() - scope.started) * 1000
                runtime.task_history.record(task)
        raise ToolError(public_message(f"{error.code}: {error.message}", runtime.secrets))

    @server.tool(description="List the datasets you can query, with their descriptions.", annotations=read_only,
                 structured_output=False)
    def list_datasets(ctx: Context) -> str:
        return recorded("list_datasets", {}, lambda: {"datasets": tools.list_datasets(caller(ctx))}, caller(ctx))

    @server.tool(description="Columns (name, type, description), primary key and unique keys of one dataset.",
                 annotations=read_only, structured_output=False)
    def describe_dataset(name: str, ctx: Context) -> str:
        return recorded("describe_dataset", {"name": name}, lambda: tools.table_schema(name, caller(ctx)), caller(ctx))

    @server.tool(description="Find rows by meaning (vector search over the datasets' embedding columns). "
                             "`datasets` limits the search, `where` is a SQL condition on the rows, `limit` at "
                             "most 10; `truncated` says when results were cut.",
                 annotations=read_only, structured_output=False)
    def search(text: str, ctx: Context, datasets: list[str] | None = None, limit: int = 5,
               where: str | None = None) -> str:
        who = caller(ctx)
        args = {"text": text, "datasets": datasets, "limit": limit, "where": where}
        return recorded("search", args, lambda: tools.search(args, who, protocol=protocol), who)

    @server.tool(description=f"Run one read-only SQL query (PostgreSQL dialect). At most {MAX_ROWS} rows and "
                             f"{MAX_CHARS} characters come back; `truncated` says when rows were cut.",
                 annotations=read_only, structured_output=False)
    def query(sql: str, ctx: Context, max_rows: int = MAX_ROWS) -> str:
        who = caller(ctx)
        return recorded("query", {"sql": sql}, lambda: tools.sql(sql, who, protocol=protocol, max_rows=max_rows), who)

    return server


def mount_http(app: Any, runtime: Runtime) -> Any:
    """Add POST/GET/DELETE /v1/mcp (stateless Streamable HTTP) to a FastAPI app; returns the
    session manager, whose run() must wrap the app's lifespan."""
    from mcp.server.transport_security import TransportSecuritySettings

    server = create_mcp_server(runtime)
    sub = server.streamable_http_app(streamable_http_path="/v1/mcp", stateless_http=True, json_response=True,
                                     transport_security=TransportSecuritySettings(
                                         enable_dns_rebinding_protection=False))
    for route in sub.routes:
        app.router.routes.append(route)
    return server.session_manager


def run_stdio(pod_path: str, data_dir: str | None = None) -> int:
    """`satchel mcp`: load the pod, wait for its data, serve MCP on stdin/stdout."""
    import anyio

    from engine.config import load_pod

    from .providers import ModelRegistry

    pod = load_pod(pod_path)
    runtime = Runtime(pod, data_dir=data_dir)
    models = ModelRegistry(pod.model_copy(update={"models": []}), runtime.task_history, runtime.metrics,
                           cache_dir=str(runtime.data_dir / "models"))  # embedding models: search needs them
    runtime.embedders.attach(models.embedder)
    runtime.ai.attach(models.get)
    models.start()
    runtime.start()
    try:
        runtime.wait_ready(120)
        server = create_mcp_server(runtime, Principal("mcp-stdio"), protocol="mcp")
        anyio.run(server.run_stdio_async)
    finally:
        models.stop()
        runtime.stop()
    return 0
