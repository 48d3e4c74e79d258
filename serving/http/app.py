"""The HTTP API on port 8090 (FastAPI): health, readiness, SQL, datasets, status, refresh."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import math
import threading
from collections.abc import Iterable, Iterator
from http import HTTPStatus

import pyarrow as pa
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.errors import (BadRequest, Forbidden, InternalError, NotFound, Overloaded, PayloadTooLarge, SatchelError,
                           Unauthenticated)
from engine.query.results_cache import CacheUse
from engine.redact import public_message, redact, redact_value
from engine.runtime import Principal, Runtime
from engine.task_history import current_request, request_scope

from .disconnect import on_query_pool, query_pool, until_disconnect
from ..result_head import head
from .formats import ARROW_STREAM, csv_chunks, drain, json_body, json_chunks, json_ready
from .status_page import render as render_status_page

OPEN_PATHS = {"/health", "/v1/ready"}
SMALL_RESULT_BYTES = 1 << 20  # a whole result up to this size is sent as one response, not streamed
MAX_BODY_BYTES = 16 << 20  # a request body is read whole before it is parsed (SQL: at most 1 Mi characters)
log = logging.getLogger("satchel.http")


def create_app(runtime: Runtime, models: "ModelRegistry | None" = None) -> FastAPI:
    """The FastAPI app serving `runtime` (and the pod's models on the OpenAI-compatible routes).

    The caller owns the models' lifecycle (start and stop); without one, the app serves none."""
    from ..llm.providers import ModelRegistry
    from ..llm.routes import create_router
    from ..llm.mcp import mount_http

    holder: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        async with holder["mcp"].run():
            yield

    app = FastAPI(title="Satchel", version=_version(), docs_url=None, redoc_url=None, lifespan=lifespan)
    if models is None:
        models = ModelRegistry(runtime.pod.model_copy(update={"models": [], "embeddings": []}))
    app.state.models = models
    router = create_router(runtime, models)
    app.state.model_calls = router.calls
    app.include_router(router)
    holder["mcp"] = mount_http(app, runtime)

    app.add_middleware(_Authenticate, runtime=runtime)

    @app.exception_handler(SatchelError)
    async def satchel_error(request: Request, e: SatchelError):
        _account(runtime, request.scope, e)
        return _error(e, runtime.secrets)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):  # unknown path or method
        error = NotFound if e.status_code == 404 else BadRequest
        _account(runtime, request.scope, error(f"{e.status_code} {e.detail}"))
        return await http_exception_handler(request, e)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError):
        _account(runtime, request.scope, BadRequest("the request does not match the route's parameters"))
        return await request_validation_exception_handler(request, e)

    # /health, /v1/ready and /v1/status run on the event loop (async, nothing blocking): they
    # answer while every thread is busy and whatever the sources do
    @app.get("/", response_class=HTMLResponse)
    def status_page(request: Request) -> HTMLResponse:
        """The status page: the caller's datasets, models, recent queries and refreshes."""
        return HTMLResponse(render_status_page(runtime, models, request.state.principal))

    @app.get("/health", response_class=PlainTextResponse)
    async def health() -> str:
        return "ok"

    @app.get("/v1/ready")
    async def ready() -> Response:
        loading = [f"model {m}" for m in models.loading()]
        if runtime.ready() and not loading:
            return PlainTextResponse("ready")
        waiting = [d["name"] if not d["ready"] else f"{d['name']} (its snapshot is stale)"
                   for d in runtime.status()["datasets"]
                   if not d["ready"] or (d.get("snapshot") or {}).get("stale")] + loading
        return PlainTextResponse(f"not ready: waiting for {', '.join(waiting)}", status_code=503)

    @app.post("/v1/sql")
    async def sql(request: Request) -> Response:
        text = (await request.body()).decode("utf-8", errors="replace")
        accept = request.headers.get("accept", "application/json")
        principal: Principal = request.state.principal
        cache = CacheUse(bypass="no-cache" in request.headers.get("cache-control", "").lower())

        if ARROW_STREAM in accept:
            render, media = _arrow_stream, ARROW_STREAM
        elif "text/csv" in accept:
            render, media = csv_chunks, "text/csv"
        else:
            render, media = json_chunks, "application/json"

        def start(cancel: threading.Event) -> tuple[pa.RecordBatchReader, list[pa.RecordBatch], bytes | None]:
            reader = runtime.query(text, principal, protocol="http", client_gone=cancel.is_set, cache=cache)
            batches, whole = head(reader)  # planning/first-batch errors still get a proper status
            if whole and sum(batch.nbytes for batch in batches) <= SMALL_RESULT_BYTES:
                body = (json_body(reader.schema, batches) if render is json_chunks
                        else b"".join(render(reader.schema, iter(batches))))
                return reader, batches, body
            return reader, batches, None

        # planning and the first batch can wait on a slow source: on the query pool, never on the
        # event loop; a client that disconnects meanwhile cancels the query's source work
        reader, batches, body = await until_disconnect(request, start, pool=query_pool())
        headers = {"Results-Cache-Status": cache.status} if runtime.caches_results else {}
        if body is not None:  # a small result (most of an agent's): one response, no trips to the pool per chunk
            return Response(body, media_type=media, headers=headers)
        chunks = render(reader.schema, itertools.chain(batches, reader))
        return StreamingResponse(on_query_pool(chunks), media_type=media, headers=headers)

    @app.post("/v1/search")
    async def search(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            raise BadRequest("the body must be JSON") from None
        principal: Principal = request.state.principal
        out = await until_disconnect(request, lambda cancel: runtime.search(body, principal, protocol="http",
                                                                            client_gone=cancel.is_set),
                                     pool=query_pool())
        return JSONResponse(json_ready(out))  # a NaN or non-UTF-8 bytes in a row failed FastAPI's encoder

    @app.get("/v1/datasets")
    def datasets(request: Request) -> list[dict]:
        principal: Principal = request.state.principal
        status = {d["name"]: d for d in runtime.status()["datasets"] if runtime.visible(d["name"], principal)}
        out = []
        for t in runtime.tables(principal):
            if t.schema != "public":
                continue
            entry = {"name": t.name, "type": t.table_type.lower(), "description": t.description,
                     "primary_key": list(t.primary_key), "unique_keys": [list(k) for k in t.unique_keys],
                     "columns": [{"name": f.name, "type": str(f.type), "nullable": f.nullable,
                                  "description": (f.metadata or {}).get(b"description", b"").decode() or None,
                                  **({"masked": f.metadata[b"masked"].decode()}
                                     if f.metadata and b"masked" in f.metadata else {})}
                                 for f in t.arrow_schema]}
            if t.name in status:
                entry.update({k: v for k, v in status.pop(t.name).items() if k not in entry})
            out.append(entry)
        # datasets whose schema is unavailable (source down before the first load) are listed
        # too: their status and last_error are what an operator needs to see. With no columns
        # known, no key is (a policy might hide its columns).
        for name, info in status.items():
            out.append({"name": name, "type": "table", "description": info.get("description"), "primary_key": [],
                        "unique_keys": [], "columns": [], **{k: v for k, v in info.items() if k not in ("name", "description")}})
        return out

    @app.get("/v1/status")
    async def status(request: Request) -> dict:
        status = runtime.status()
        principal = getattr(request.state, "principal", None)
        if principal is not None and principal.policy is not None:  # its own datasets only
            status["datasets"] = [d for d in status["datasets"] if runtime.visible(d["name"], principal)]
        return redact_value({**status, "models": models.status()}, runtime.secrets)

    @app.post("/v1/datasets/{name}/acceleration/refresh", status_code=201)
    def refresh(name: str, request: Request, wait: bool = False) -> dict:
        """Trigger a refresh; with `?wait=true`, answer when it ends, with its outcome."""
        if not runtime.visible(name, request.state.principal):
            raise NotFound(f"unknown dataset '{name}'")
        result = runtime.refresh_and_wait(name) if wait else runtime.refresh(name)
        result = redact_value(result, runtime.secrets)
        return {"message": f"refresh of '{result['dataset']}' {result['status']}", **result}

    return app


class _Authenticate:
    """Sets `request.state.principal` from the X-API-Key header; 401 for everything but the open
    paths (429 while the client address is throttled for wrong keys). A plain ASGI middleware,
    not `@app.middleware`: that one (BaseHTTPMiddleware) hides a client's disconnect from the
    route, which needs it to cancel source statements.

    Each request runs in a `request_scope`: a refused or failed request that recorded no
    task-history row gets one here (auth, unexpected errors) or in the SatchelError handler."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app, self.runtime = app, runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        with request_scope():
            if scope["path"] not in OPEN_PATHS:
                try:
                    key = Headers(scope=scope).get("x-api-key")
                    client = (scope.get("client") or ("unknown",))[0]
                    scope.setdefault("state", {})["principal"] = self.runtime.authenticate(key, client, "http")
                except SatchelError as e:
                    _account(self.runtime, scope, e)
                    return await _error(e, self.runtime.secrets)(scope, receive, send)
            started = False
            status = 0

            async def sending(message: dict) -> None:
                nonlocal started, status
                if message["type"] == "http.response.start":
                    started, status = True, message["status"]
                await send(message)

            declared = Headers(scope=scope).get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                error = _too_large()
                _account(self.runtime, scope, error)
                return await _error(error, self.runtime.secrets)(scope, receive, send)
            try:
                await self.app(scope, _bounded(receive), sending)
            except Exception as e:  # noqa: BLE001 - never internals to the client
                if started:
                    # The status is sent: end the connection without the body's end, so the client
                    # sees a failed transfer, never a complete-looking one (the query's own task
                    # history row already has the error).
                    failure = e.__context__ if isinstance(e.__context__, SatchelError) else e  # Starlette re-raises
                    cause = (f"{failure.code}: {failure.message}" if isinstance(failure, SatchelError)
                             else f"{type(failure).__name__}: {failure}")
                    log.error("response to %s %s failed after it started (%s); connection closed",
                              scope["method"], scope["path"], redact(cause, self.runtime.secrets))
                    log.debug("response failure", exc_info=e)
                    return
                log.error("internal error serving %s", scope["path"], exc_info=e)
                error = InternalError(f"internal error serving {scope['path']}; see the server log")
                _account(self.runtime, scope, error)
                await _error(error, self.runtime.secrets)(scope, receive, send)
                return
            if status >= 400 and scope["path"] not in OPEN_PATHS:  # e.g. refused by MCP's transport, which records none
                _account(self.runtime, scope, _status_error(status))


def _bounded(receive: Receive) -> Receive:
    """`receive`, raising PayloadTooLarge once the body passes MAX_BODY_BYTES (a chunked body
    declares no length): a body is read whole into memory before it is parsed."""
    size = 0

    async def receiving() -> dict:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > MAX_BODY_BYTES:
                raise _too_large()
        return message

    return receiving


def _status_error(status: int) -> SatchelError:
    """The error a response status stands for (for its task-history row and metric)."""
    kinds = {kind.http_status: kind for kind in (Unauthenticated, Forbidden, NotFound, PayloadTooLarge, Overloaded)}
    kind = kinds.get(status, InternalError if status >= 500 else BadRequest)
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    return kind(f"{status} {phrase}")


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than {MAX_BODY_BYTES >> 20} MiB, the most the sidecar reads")


def _account(runtime: Runtime, scope: Scope, e: SatchelError) -> None:
    """A task-history row and a metric for a failed request that has recorded none yet."""
    request = current_request()
    if request is None or request.rows:
        return
    principal = (scope.get("state") or {}).get("principal")
    runtime.refused(e, protocol="http", principal=getattr(principal, "name", None),
                    text=f"{scope['method']} {scope['path']}", started=request.started)


def _error(e: SatchelError, secrets: Iterable[str] = ()) -> JSONResponse:
    headers = {"WWW-Authenticate": "X-API-Key"} if e.http_status == 401 else {}
    retry_after = getattr(e, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return JSONResponse({"error": {"code": e.code, "message": public_message(e.message, secrets)}},
                        status_code=e.http_status, headers=headers)


def _arrow_stream(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> Iterator[bytes]:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
            yield drain(sink)
    yield drain(sink)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("satchel")
    except Exception:
        return "0"
