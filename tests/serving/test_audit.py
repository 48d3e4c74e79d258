"""Every request audited, nothing internal leaked. Real sidecars on 127.0.0.1, real clients
(ADBC, pyarrow.flight, httpx, the MCP SDK); no doubles.

* a refused request (auth, parsing, planning, policy) on Flight SQL, HTTP or MCP is one
  task-history row (principal when known, protocol, error code, duration) and is counted in
  `satchel_query_failures` under the code the client saw (found: Flight refusals left neither,
  and failed SQL was counted as internal_error);
* errors carry `<code>: <message>` only (found: every Flight error detail carried a Python
  traceback with server file paths);
* secrets and credentials never reach /v1/status, error messages, task history or the log;
* wrong API keys are throttled per client address;
* `SELECT ? AS s` with a bound parameter announces the parameter's type (found: ADBC refused
  the result, "expected s: null").
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
import time
from collections.abc import Iterator

import adbc_driver_flightsql.dbapi as adbc
import httpx
import pyarrow as pa
import pytest
from adbc_driver_flightsql import DatabaseOptions
from google.protobuf import any_pb2
from prometheus_client.parser import text_string_to_metric_families
from pyarrow import flight

from serving.flight_sql import flight_sql_pb2 as pb

KEY_A, KEY_B = "key-a-7f3k2x", "key-b-9q8w1z"
UP_SECRET = "Up5ecretT0ken"  # a pod secret inside a model endpoint's URL user info
LITERAL_KEY = "sk-live-abcdef1234567890"  # an openai_api_key written literally in the pod
INTERNALS = ("Traceback", 'File "', ".py", "pyarrow", "/work/", "site-packages", "most recent call")

REFUSALS = {  # SQL -> the code every protocol reports
    "DROP TABLE t": "read_only",
    "selec 1": "sql_error",
    "SELECT * FROM nope": "unknown_dataset",
    "SELECT * FROM read_csv('/etc/passwd')": "read_only",
    "SELECT CAST('x' AS INT) FROM t": "sql_error",  # fails while planning in DataFusion
}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _EchoUpstream:
    """An OpenAI-compatible upstream that refuses every call, echoing the request's
    Authorization header in its error body (as some gateways do)."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.dumps({"error": {"message": "invalid api key", "request": {
                    "headers": f"Authorization: {self.headers.get('Authorization')}"}}}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[_EchoUpstream]:
    server = _EchoUpstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def audited(module_satchel_server, upstream):
    pod = f"""
version: v1
kind: Spicepod
name: audit
runtime:
  auth:
    api_key:
      enabled: true
      keys: ["${{env:KEY_A}}", "${{env:KEY_B}}"]
datasets:
  - from: file:t.csv
    name: t
  - from: file:gone.csv
    name: gone
models:
  - from: openai:gpt-echo
    name: echo
    params:
      endpoint: http://127.0.0.1:{upstream.port}/v1
      openai_api_key: {LITERAL_KEY}
  - from: openai:gpt-down
    name: down
    params:
      endpoint: https://user:${{secrets:UP_SECRET}}@127.0.0.1:{_closed_port()}/v1
"""
    return module_satchel_server(pod, files={"t.csv": "id,name\n1,a\n2,b\n", "gone.csv": "id\n1\n"}, api_key=KEY_A,
                                 env={"KEY_A": KEY_A, "KEY_B": KEY_B, "UP_SECRET": UP_SECRET})


# ---------------------------------------------------------------------- clients


def _adbc(server, key: str = KEY_A):
    return adbc.connect(server.flight_uri, autocommit=True,
                        db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {key}"})


def _flight_error(server, sql: str, key: str = KEY_A) -> adbc.Error:
    with _adbc(server, key) as conn, conn.cursor() as cur, pytest.raises(adbc.Error) as caught:
        cur.execute(sql)
        cur.fetchall()
    return caught.value


def _raw(server, key: str = KEY_A) -> tuple[flight.FlightClient, flight.FlightCallOptions]:
    return (flight.connect(server.flight_uri),
            flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {key}".encode())]))


def _command(message) -> flight.FlightDescriptor:
    packed = any_pb2.Any()
    packed.Pack(message)
    return flight.FlightDescriptor.for_command(packed.SerializeToString())


def _http(server, sql: str, key: str = KEY_A) -> httpx.Response:
    return httpx.post(f"{server.http_url}/v1/sql", content=sql, headers={"X-API-Key": key}, timeout=30)


def _mcp_tool(server, tool: str, args: dict, key: str = KEY_A) -> tuple[bool, str]:
    import anyio
    import httpx2  # the mcp client's HTTP library
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    out: list = []

    async def main() -> None:
        http = httpx2.AsyncClient(headers={"X-API-Key": key}, timeout=30)
        async with (streamable_http_client(f"{server.http_url}/v1/mcp", http_client=http) as streams,
                    ClientSession(streams[0], streams[1]) as session):
            await session.initialize()
            res = await session.call_tool(tool, args)
            out.append((bool(res.is_error), res.content[0].text if res.content else ""))

    anyio.run(main)
    return out[0]


def _history(server) -> list[dict]:
    r = _http(server, "SELECT task, protocol, principal, query_text, error, error_code, duration_ms "
                      "FROM runtime.task_history ORDER BY task_id")
    assert r.status_code == 200, r.text
    return r.json()


def _failures(server) -> dict[tuple[str, str], float]:
    text = httpx.get(server.metrics_url, timeout=10).text
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "satchel_query_failures_total":
                out[(sample.labels["protocol"], sample.labels["code"])] = sample.value
    return out


def _metric(server, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(httpx.get(server.metrics_url, timeout=10).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def _assert_clean(text: str) -> None:
    """No traceback, path or library name. (Arrow's C++ layer appends a fixed
    `Detail: Python exception: <status>` to INVALID_ARGUMENT, NOT_FOUND and UNIMPLEMENTED statuses
    raised from Python; Satchel reduces it to the status name, see serving/flight_sql/errors.py.)"""
    leaked = [marker for marker in INTERNALS if marker in text]
    assert not leaked, f"{leaked} in {text!r}"
    detail = text.partition("Detail: ")[2]
    assert re.fullmatch(r"(Python exception: )?[A-Za-z]+( \(.*\))?", detail) or not detail, text


# ---------------------------------------------------------------------- 1. every request audited


def test_refused_requests_are_one_row_and_a_metric_on_every_protocol(audited) -> None:
    before = _failures(audited)
    for sql, code in REFUSALS.items():
        error = _flight_error(audited, f"{sql} -- flight")
        assert f"{code}: " in str(error)
        r = _http(audited, f"{sql} -- http", key=KEY_B)
        assert r.status_code >= 400 and r.json()["error"]["code"] == code
        is_error, text = _mcp_tool(audited, "query", {"sql": f"{sql} -- mcp"})
        assert is_error and f"{code}: " in text
    # refused by auth, on each protocol
    client, _ = _raw(audited, "wrong-key")
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.get_flight_info(_command(pb.CommandStatementQuery(query="SELECT 'wrong key'")),
                               flight.FlightCallOptions(headers=[(b"authorization", b"Bearer wrong-key")]))
    assert _http(audited, "SELECT 1", key="wrong-key").status_code == 401
    assert httpx.post(f"{audited.http_url}/v1/mcp", headers={"X-API-Key": "wrong-key"}, timeout=30,
                      json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).status_code == 401
    assert httpx.get(f"{audited.http_url}/v1/nothing-here", headers={"X-API-Key": KEY_B}).status_code == 404

    rows = _history(audited)
    for sql, code in REFUSALS.items():
        for protocol, principal in (("flight", "api_key_1"), ("http", "api_key_2"), ("mcp", "api_key_1")):
            mine = [r for r in rows if r["query_text"] == f"{sql} -- {protocol}"]
            assert len(mine) == 1, (sql, protocol, mine)
            [row] = mine
            assert (row["task"], row["protocol"], row["principal"], row["error_code"]) == \
                ("query", protocol, principal, code), row
            assert row["error"] and row["duration_ms"] is not None and row["duration_ms"] >= 0
    auth_rows = [r for r in rows if r["error_code"] == "unauthenticated"]
    assert {(r["protocol"], r["query_text"]) for r in auth_rows} >= {
        ("flight", "SELECT 'wrong key'"), ("http", "POST /v1/sql"), ("http", "POST /v1/mcp")}
    assert all(r["principal"] is None and r["duration_ms"] is not None for r in auth_rows)
    [unknown_path] = [r for r in rows if r["query_text"] == "GET /v1/nothing-here"]
    assert (unknown_path["task"], unknown_path["principal"], unknown_path["error_code"]) == \
        ("request", "api_key_2", "not_found")

    after = _failures(audited)
    counts = {}
    for sql, code in REFUSALS.items():
        for protocol in ("flight", "http", "mcp"):
            counts[(protocol, code)] = counts.get((protocol, code), 0) + 1
    counts[("flight", "unauthenticated")] = 1
    counts[("http", "unauthenticated")] = 2
    counts[("http", "not_found")] = 1
    for key, n in counts.items():
        assert after.get(key, 0) - before.get(key, 0) == n, (key, before.get(key), after.get(key))
    for protocol in ("flight", "http", "mcp"):
        assert after.get((protocol, "internal_error"), 0) == before.get((protocol, "internal_error"), 0)


def test_a_refused_prepared_statement_and_an_unknown_ticket_are_audited(audited) -> None:
    client, options = _raw(audited, KEY_B)
    packed = any_pb2.Any()
    packed.Pack(pb.TicketStatementQuery(statement_handle=b"no-such-handle"))
    with pytest.raises(KeyError, match="not_found: unknown or expired statement ticket"):
        client.do_get(flight.Ticket(packed.SerializeToString()), options).read_all()
    body = any_pb2.Any()
    body.Pack(pb.ActionCreatePreparedStatementRequest(query="DELETE FROM t -- prepared"))
    with pytest.raises(flight.FlightUnauthorizedError, match="read_only: "):
        list(client.do_action(flight.Action("CreatePreparedStatement", body.SerializeToString()), options))
    rows = _history(audited)
    [ticket] = [r for r in rows if r["query_text"] == "DoGet TicketStatementQuery"]
    assert (ticket["task"], ticket["principal"], ticket["error_code"]) == ("request", "api_key_2", "not_found")
    [prepared] = [r for r in rows if r["query_text"] == "DELETE FROM t -- prepared"]
    assert (prepared["task"], prepared["protocol"], prepared["error_code"]) == ("query", "flight", "read_only")


# ---------------------------------------------------------------------- 2. code and message only


def test_errors_carry_the_stable_code_and_message_only(audited) -> None:
    for sql, code in {**REFUSALS, "SELECT 1/0 FROM t": "sql_error"}.items():
        error = _flight_error(audited, sql)  # ADBC shows the whole gRPC status message
        assert f"{code}: " in str(error)
        _assert_clean(str(error))
        r = _http(audited, sql)
        assert r.json()["error"]["code"] == code
        _assert_clean(r.text)
        is_error, text = _mcp_tool(audited, "query", {"sql": sql})
        assert is_error and f"{code}: " in text
        _assert_clean(text)
    client, options = _raw(audited)
    with pytest.raises(pa.ArrowInvalid) as caught:  # a malformed command: INVALID_ARGUMENT
        client.get_flight_info(flight.FlightDescriptor.for_command(b"\x01garbage"), options)
    assert "bad_request: malformed Flight SQL command" in str(caught.value)
    _assert_clean(str(caught.value))
    with pytest.raises(adbc.Error) as bound, _adbc(audited) as conn, conn.cursor() as cur:
        cur.execute("SELECT ? AS a, ? AS b", ("only one",))  # DoPut with the wrong number of parameters
    assert "sql_error: the statement has 2 parameter(s) but 1 were bound" in str(bound.value)
    _assert_clean(str(bound.value))


def test_an_engine_error_names_the_file_not_the_sidecars_directories(audited) -> None:
    """A source file that vanished after start-up: the engine's error names it (`.../gone.csv`),
    on every protocol and in task history, without the directories it lives in."""
    (audited.pod_dir / "gone.csv").unlink()
    sql = "SELECT count(*) FROM gone"
    texts = {"flight": str(_flight_error(audited, sql)), "http": _http(audited, sql).text,
             "mcp": _mcp_tool(audited, "query", {"sql": sql})[1]}
    texts["task history"] = _http(audited, "SELECT error FROM runtime.task_history WHERE error LIKE '%gone.csv%'").text
    for where, text in texts.items():
        assert ".../gone.csv" in text, (where, text)
        assert str(audited.pod_dir.parent) not in text and "pytest" not in text, (where, text)
        _assert_clean(text)


# ---------------------------------------------------------------------- 3. secrets never leave


def test_secrets_and_credentials_never_leave(audited) -> None:
    status = httpx.get(f"{audited.http_url}/v1/status", headers={"X-API-Key": KEY_A}, timeout=30)
    assert status.status_code == 200 and "user:***@127.0.0.1" in status.text
    down = httpx.post(f"{audited.http_url}/v1/chat/completions", headers={"X-API-Key": KEY_A}, timeout=60,
                      json={"model": "down", "messages": [{"role": "user", "content": "hi"}]})
    assert down.status_code >= 500 and "user:***@127.0.0.1" in down.json()["error"]["message"]
    echo = httpx.post(f"{audited.http_url}/v1/chat/completions", headers={"X-API-Key": KEY_A}, timeout=60,
                      json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]})
    assert echo.status_code == 502 and "Authorization: Bearer ***" in echo.json()["error"]["message"]
    flight_error = _flight_error(audited, f"SELECT * FROM read_csv('https://user:{UP_SECRET}@example.com/x.csv')")
    history = _http(audited, "SELECT query_text, error FROM runtime.task_history").text
    for where, text in {"status": status.text, "down": down.text, "echo": echo.text, "flight": str(flight_error),
                        "task history": history, "log": audited.log()}.items():
        for secret in (UP_SECRET, LITERAL_KEY, KEY_A, KEY_B):
            assert secret not in text, f"{secret} in {where}"


def test_a_postgres_password_with_at_and_slash_never_leaks(satchel_server) -> None:
    password = "Qx7hunter@Zb9brown/Vy3fox"  # the documented URI form takes it verbatim
    server = satchel_server(f"""
version: v1
kind: Spicepod
name: pg_secret
datasets:
  - from: postgres:public.things
    name: things
    params:
      pg_connection_string: postgresql://reader:${{secrets:PG_PASS}}@127.0.0.1:{_closed_port()}/shop
    acceleration:
      enabled: true
""", env={"PG_PASS": password}, wait_ready=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = httpx.get(f"{server.http_url}/v1/status", timeout=10).text
        if json.loads(status)["datasets"][0]["last_error"]:
            break
        time.sleep(0.2)
    error = json.loads(status)["datasets"][0]["last_error"]
    assert error and "127.0.0.1" in error  # the real host: the password was parsed whole
    history = server.sql("SELECT query_text, error FROM runtime.task_history").text
    for where, text in {"status": status, "task history": history, "log": server.log()}.items():
        for fragment in re.split(r"[@/]", password):
            assert fragment.lower() not in text.lower(), f"{fragment} in {where}"


# ---------------------------------------------------------------------- 5. wrong keys throttled


def test_wrong_keys_are_throttled_per_client_over_http_and_flight(satchel_server) -> None:
    server = satchel_server("""
version: v1
kind: Spicepod
name: throttled
runtime:
  auth:
    api_key:
      enabled: true
      keys: ["${env:SATCHEL_TEST_API_KEY}"]
datasets:
  - from: file:t.csv
    name: t
""", files={"t.csv": "id\n1\n"}, api_key="right-key")
    with httpx.Client(timeout=30) as http:
        started = time.monotonic()
        answers = [http.post(f"{server.http_url}/v1/sql", content="SELECT 1", headers={"X-API-Key": f"guess-{i}"})
                   for i in range(300)]
        elapsed = time.monotonic() - started
        statuses = [a.status_code for a in answers]
        assert set(statuses) == {401, 429}
        assert statuses.count(401) <= 8, statuses.count(401)  # keys actually checked
        throttled = answers[-1]
        assert throttled.status_code == 429 and throttled.json()["error"]["code"] == "overloaded"
        assert int(throttled.headers["Retry-After"]) >= 1
        # while throttled even the right key waits; after Retry-After it works and resets the client
        assert http.post(f"{server.http_url}/v1/sql", content="SELECT 1",
                         headers={"X-API-Key": "right-key"}).status_code == 429
        time.sleep(int(throttled.headers["Retry-After"]))
        assert http.post(f"{server.http_url}/v1/sql", content="SELECT 1",
                         headers={"X-API-Key": "right-key"}).status_code == 200
    assert _metric(server, "satchel_auth_throttled_total", protocol="http") >= 290
    print(f"\nHTTP: 300 wrong keys in {elapsed:.2f} s, {statuses.count(401)} checked, "
          f"{statuses.count(429)} throttled")

    client = flight.connect(server.flight_uri)
    command = _command(pb.CommandStatementQuery(query="SELECT 1"))
    outcomes: list[str] = []
    started = time.monotonic()
    for i in range(300):
        wrong = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer guess-{i}".encode())])
        try:
            client.get_flight_info(command, wrong)
        except flight.FlightUnauthenticatedError:
            outcomes.append("unauthenticated")
        except flight.FlightUnavailableError as e:
            assert "overloaded: too many wrong API keys" in str(e)
            _assert_clean(str(e))
            outcomes.append("throttled")
    elapsed = time.monotonic() - started
    assert outcomes.count("unauthenticated") <= 8 and outcomes.count("throttled") >= 290
    right = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer right-key")])
    deadline = time.monotonic() + 40
    while True:
        try:
            client.get_flight_info(command, right)
            break
        except flight.FlightUnavailableError:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    assert _metric(server, "satchel_auth_throttled_total", protocol="flight") >= 290
    assert "guess-" not in httpx.get(server.metrics_url, timeout=10).text  # counted without the key
    print(f"Flight: 300 wrong keys in {elapsed:.2f} s, {outcomes.count('unauthenticated')} checked, "
          f"{outcomes.count('throttled')} throttled")


# ---------------------------------------------------------------------- 7. parameter types


def test_a_bound_parameter_types_the_prepared_result(audited) -> None:
    with _adbc(audited) as conn, conn.cursor() as cur:
        cur.execute("SELECT ? AS s", ("x",))
        assert cur.fetchall() == [("x",)]
        cur.execute("SELECT $1 + 1 AS n, $2 AS label", (41, "answer"))
        assert cur.fetchall() == [(42, "answer")]
        cur.execute("SELECT name FROM t WHERE id = ?", (2,))
        assert cur.fetchall() == [("b",)]
