"""Hostile SQL against one real `satchel run` over Flight SQL (ADBC) and HTTP: well over 200
statements in the categories that crashed or hung the sidecar before (deep nesting, long chains,
huge generated values, cartesian joins, endless recursive CTEs, table functions and internal
tables, writes and settings) and harmless ones that must keep working. A watchdog samples the
sidecar's RSS throughout: it never crashes, stays under its memory budget (plus the process's
own baseline), every statement ends within its deadline, and harmless statements are answered."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.processes import children, tree_cpu_seconds

DEADLINE_S = 4
SLACK_S = 6  # past the deadline: cancellation, a busy 2-core machine
BUDGET_MIB = 512

OK = {"ok"}
REFUSED_WRITE = {"read_only"}
TOO_COMPLEX = {"sql_too_complex"}
TOO_BIG = {"resource_exhausted"}
BOUNDED = {"ok", "timeout", "resource_exhausted"}  # heavy work: an answer, or a clean stop
NOT_A_TABLE = {"sql_error", "not_found", "unknown_dataset", "read_only"}

TABLES = ("t_arrow", "t_duckdb", "t_live")


def _statements() -> list[tuple[str, set[str]]]:
    out: list[tuple[str, set[str]]] = []
    for verb in ["DROP TABLE {t}", "DELETE FROM {t}", "UPDATE {t} SET a = 1", "INSERT INTO {t} VALUES (1, 'x')",
                 "CREATE TABLE x AS SELECT * FROM {t}", "COPY {t} TO '/tmp/x.csv'", "ALTER TABLE {t} ADD COLUMN c INT",
                 "TRUNCATE {t}", "SELECT * INTO x FROM {t}", "SELECT * FROM {t} FOR UPDATE"]:
        out += [(verb.format(t=t), REFUSED_WRITE | {"sql_error"}) for t in TABLES]
    out += [(s, REFUSED_WRITE | {"sql_error"}) for s in [
        "ATTACH '/tmp/x.db' AS x", "INSTALL httpfs", "LOAD httpfs", "PRAGMA database_list", "SET memory_limit = '100GB'",
        "CALL pragma_version()", "EXPORT DATABASE '/tmp/x'", "VACUUM", "CHECKPOINT", "BEGIN", "SELECT 1; DROP TABLE t_arrow",
        "DETACH x", "RESET ALL", "SET enable_external_access = true", "USE memory"]]
    out += [(s, NOT_A_TABLE) for s in [
        "SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_parquet('/etc/passwd')", "SELECT * FROM duckdb_settings()",
        "SELECT * FROM duckdb_databases()", "SELECT * FROM pg_settings", "SELECT * FROM information_schema.key_column_usage",
        "SELECT * FROM information_schema.duckdb_tables", "SHOW ALL", "SHOW search_path", "DESCRIBE SELECT 1",
        "SELECT * FROM __satchel_meta", "SELECT * FROM sqlite_master", "SELECT * FROM glob('/*')", "SELECT * FROM no_such_table",
        "SELECT * FROM t_arrow, (WITH pg_settings AS (SELECT 1 AS a) SELECT a FROM pg_settings) s, pg_settings x",
        "SELECT * FROM 'data.csv'", "SELECT * FROM main.t_arrow_internal", "SELECT * FROM system.main.t_arrow"]]
    for depth in (33, 50, 200, 5000):
        out.append(("SELECT " + "(" * depth + "1" + ")" * depth, TOO_COMPLEX))
        out.append(("SELECT " + "(SELECT " * depth + "1" + ")" * depth, TOO_COMPLEX))
    for terms in (1001, 5000, 20000):
        out.append(("SELECT " + "+".join(["1"] * terms), TOO_COMPLEX))
        for t in TABLES:
            out.append((f"SELECT count(*) FROM {t} WHERE " + " OR ".join(f"a = {i}" for i in range(terms)), TOO_COMPLEX))
    out.append(("SELECT '" + "x" * (1 << 20) + "'", TOO_COMPLEX))
    for call in ["repeat('x', 2000000000)", "repeat('abc', 1000000000)", "lpad('x', 2000000000)", "rpad('x', 2000000000)",
                 "space(2000000000)"]:
        out.append((f"SELECT length({call}) AS n", TOO_BIG))
        out += [(f"SELECT length({call}) AS n FROM {t}", TOO_BIG) for t in TABLES]
    out.append(("SELECT generate_series(1, 1000000000000) AS g", TOO_BIG))
    out += [(f"SELECT unnest(range(100000000)) AS u FROM {t}", TOO_BIG) for t in TABLES]
    out += [(f"SELECT count(*) AS n FROM {t} a, {t} b, {t} c, {t} d", BOUNDED) for t in TABLES]
    out += [(f"SELECT count(*) AS n FROM {t} a JOIN {t} b ON a.a <> b.a JOIN {t} c ON b.a <> c.a", BOUNDED) for t in TABLES]
    endless = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r{join}) SELECT count(*) AS n FROM r"
    out += [(endless.format(join=""), {"timeout", "resource_exhausted"}),  # table-less: DuckDB, stopped at the deadline
            (endless.format(join=", t_arrow WHERE t_arrow.a = 0"), {"timeout", "resource_exhausted"}),  # federated: interrupted
            (endless.format(join=", t_live WHERE t_live.a = 0"), {"timeout", "resource_exhausted"}),
            (endless.format(join=", t_duckdb WHERE t_duckdb.a = 0"), {"timeout", "resource_exhausted"}),
            ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 100) SELECT sum(n) AS s FROM r",
             OK)]
    out += [(f"SELECT count(*) AS n FROM {t} WHERE regexp_like(repeat(b, 30) || '!', '(x+)+$')", BOUNDED) for t in TABLES]
    out += [(f"SELECT string_agg(b, ',') AS s FROM (SELECT a.b FROM {t} a, {t} c) q", BOUNDED) for t in TABLES]
    harmless = ["SELECT 1", "select 1 as one", "\ufeffSELECT 1", "SELECT 1;", "  SELECT 1  ", "-- a comment\nSELECT 1",
                "/* c */ SELECT 1", "SELECT U&'d\\0061t\\+000061' AS s", "VALUES (1), (2)", "EXPLAIN SELECT 1",
                "SELECT " + "(" * 30 + "1" + ")" * 30 + " AS deep", "SELECT " + "+".join(["1"] * 900) + " AS chain",
                "SELECT 'it''s' AS q", "SELECT CAST('2024-01-01' AS DATE) AS d", "SELECT NULL AS n",
                "SELECT length(repeat('x', 1000)) AS n", "SELECT count(*) AS n FROM (SELECT unnest(range(1000)) AS u) q",
                "SELECT * FROM information_schema.tables", "SHOW TABLES", "DESCRIBE t_arrow"]
    out += [(s, OK) for s in harmless]
    for t in TABLES:
        out += [(s.format(t=t), OK) for s in [
            "SELECT * FROM {t}", "SELECT count(*) AS n FROM {t}", "SELECT a, b FROM {t} WHERE a > 1 ORDER BY a LIMIT 5",
            "WITH x AS (SELECT a FROM {t}) SELECT sum(a) AS s FROM x", "SELECT a, row_number() OVER (ORDER BY a) AS r FROM {t}",
            "SELECT b, count(*) AS n FROM {t} GROUP BY b ORDER BY b", "SELECT * FROM {t} WHERE b LIKE 'x%'",
            "SELECT * FROM {t} WHERE a IN (" + ", ".join(map(str, range(5000))) + ")",
            "SELECT a FROM {t} WHERE " + " OR ".join(f"a = {i}" for i in range(300)),
            "SELECT t1.a FROM {t} t1 JOIN {t} t2 ON t1.a = t2.a", "SELECT * FROM {t} WHERE b = U&'\\0078'",
            "SELECT a FROM {t} UNION ALL SELECT a FROM {t}", "EXPLAIN SELECT * FROM {t}"]]
    out += [(s, {"sql_error", "read_only"}) for s in [  # not SQL, or not a read
        "SELEC 1", "SELECT FROM", "SELECT (1", "SELECT 'unterminated", "SELECT 1 +", "SELECT * FROM", "FROM t_arrow",
        "SELECT a FROM t_arrow WHERE", "SELECT )", "SELECT 1 1 1", "WITH x AS SELECT 1", "SELECT CAST(1 AS)", "SELECT 1 UNION", "\\x00", "SELECT ?? FROM t_arrow",
        "SELECT * FROM t_arrow LIMIT -", "SELECT nosuchfunction(1)", "SELECT a FROM t_arrow JOIN"]]
    for t in TABLES:
        out += [(s.format(t=t), OK) for s in [
            "SELECT min(a) AS lo, max(a) AS hi, avg(a) AS mean FROM {t}", "SELECT count(DISTINCT b) AS n FROM {t}",
            "SELECT upper(b) AS u, length(b) AS l FROM {t} LIMIT 3", "SELECT a FROM {t} ORDER BY a DESC LIMIT 1 OFFSET 5",
            "SELECT b FROM {t} WHERE b IS NOT NULL AND a BETWEEN 10 AND 20", "SELECT coalesce(b, 'none') AS c FROM {t} LIMIT 1"]]
    return out


STATEMENTS = _statements()


class _Watchdog:
    """Samples a process's resident memory every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_mib, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak_mib = max(self.peak_mib, _rss_mib(self.pid))
            except OSError:
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mib


def _rss_mib(pid: int) -> float:
    """Memory of the sidecar and its children (the federated engine's workers), each process's
    proportional share (PSS: the libraries they share count once, as in the container's cgroup)."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
        except OSError:  # a worker that just ended
            if p == pid:
                raise
    return total


@pytest.fixture(scope="module")
def hostile_server(module_satchel_server):
    rows = 300  # a 4-way cross join is 8.1G pairs: the federated engine's worker is killed at the deadline
    table = pa.table({"a": pa.array(range(rows), pa.int64()), "b": pa.array([f"x{i % 7}" for i in range(rows)])})
    import io
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    pod = f"""
version: v1
kind: Spicepod
name: hostile
runtime:
  params:
    memory_limit: {BUDGET_MIB}MiB
    query_timeout: {DEADLINE_S}s
datasets:
  - from: file:t.parquet
    name: t_arrow
    acceleration:
      engine: arrow
  - from: file:t.parquet
    name: t_duckdb
    acceleration:
      engine: duckdb
  - from: file:t.parquet
    name: t_live
"""
    return module_satchel_server(pod, files={"t.parquet": buffer.getvalue()})


def _flight_outcome(conn, sql: str) -> str:
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            cur.fetch_arrow_table()
        return "ok"
    except Exception as e:  # noqa: BLE001 - the code the client saw is the outcome
        m = re.search(r"\b([a-z_]+): ", str(e).replace("[FlightSQL] ", ""))
        return m.group(1) if m else f"unparsed: {str(e)[:200]}"


def _http_outcome(server, sql: str) -> str:
    r = httpx.post(f"{server.http_url}/v1/sql", content=sql.encode(), timeout=DEADLINE_S + SLACK_S + 30)
    if r.status_code == 200:
        return "ok"
    return r.json()["error"]["code"]


def test_there_are_at_least_200_statements() -> None:
    assert len(STATEMENTS) >= 200


@pytest.mark.parametrize("protocol", ["flight", "http"])
def test_hostile_statements_never_take_the_sidecar_down(hostile_server, protocol: str) -> None:
    server = hostile_server
    pid = server.process.pid
    baseline = _rss_mib(pid)
    watchdog = _Watchdog(pid)
    wrong, slow = [], []
    conn = flightsql.connect(server.flight_uri) if protocol == "flight" else None
    try:
        for sql, expected in STATEMENTS:
            started = time.monotonic()
            outcome = _flight_outcome(conn, sql) if conn is not None else _http_outcome(server, sql)
            elapsed = time.monotonic() - started
            assert server.process.poll() is None, f"the sidecar died on {sql[:120]!r}:\n{server.log()[-3000:]}"
            if outcome not in expected:
                wrong.append((sql[:120], outcome, sorted(expected)))
            if elapsed > DEADLINE_S + SLACK_S:
                slow.append((sql[:120], round(elapsed, 1)))
    finally:
        if conn is not None:
            conn.close()
        peak = watchdog.stop()
    assert not wrong, "\n".join(map(str, wrong))
    assert not slow, slow
    assert peak - baseline < BUDGET_MIB, (baseline, peak)
    before = tree_cpu_seconds(pid)  # nothing runs on past its deadline (a join that never yields included)
    time.sleep(1.0)
    assert tree_cpu_seconds(pid) - before < 0.5
    assert httpx.get(f"{server.http_url}/health", timeout=5).status_code == 200
