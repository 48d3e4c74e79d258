"""A full refresh of a large PostgreSQL table reads it on several connections at once (ranges of
pages), all in one snapshot: the accelerated copy is the table of one moment even while rows
move under concurrent updates, every session is committed and pooled again, and a refresh
ended early (dropped, or cancelled at its deadline) leaves no statement running.

Both readers are covered: DuckDB's postgres extension (pg_scanner: tables of the types it reads
exactly) and the connector's own ADBC parts (pg_parallel: here forced by a uuid column)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pytest

from connectors.base import CALLER, Caller, CancelScope, DatasetSpec
from connectors.sql.postgres import PostgresConnector
from engine.config import load_pod
from engine.errors import ConnectorError
from engine.runtime import Runtime
from tests.integration.postgres_server import PgServer, postgres_server  # noqa: F401

pytestmark = pytest.mark.integration

ROWS = 300_000  # about 3,000 pages: read in 3 parts


READERS = ["scanner", "adbc"]
_EXTRA = {"scanner": "", "adbc": ", tag uuid NOT NULL DEFAULT gen_random_uuid()"}  # uuid: not the scanner's
# How each reader's part statements look in pg_stat_statements / pg_stat_activity.
_PART = {"scanner": "%ctid BETWEEN%", "adbc": "%ctid >=%"}


def _make_big(server: PgServer, name: str, rows: int = ROWS, reader: str = "scanner") -> None:
    server.execute(f"DROP TABLE IF EXISTS public.{name}",
                   f"CREATE TABLE public.{name} (id int8 PRIMARY KEY, v int8 NOT NULL, pad text NOT NULL"
                   f"{_EXTRA[reader]})",
                   f"INSERT INTO public.{name} SELECT g, 0, md5(g::text) FROM generate_series(1, {rows}) g",
                   f"GRANT SELECT ON public.{name} TO satchel", f"VACUUM ANALYZE public.{name}")


def _runtime(server: PgServer, tmp_path: Path, table: str, extra: str = "") -> Runtime:
    (tmp_path / "spicepod.yaml").write_text(f"""version: v1
kind: Spicepod
name: parallel
datasets:
  - from: postgres:public.{table}
    name: {table}
    params:
{server.params_yaml(6)}
    acceleration:
      engine: duckdb
{extra}""")
    return Runtime(load_pod(tmp_path / "spicepod.yaml"), data_dir=str(tmp_path / ".satchel"))


def _part_statements(server: PgServer, table: str, reader: str = "scanner") -> int:
    return server.fetch(f"SELECT count(*) FROM pg_stat_statements WHERE query LIKE '%FROM \"public\".\"{table}\"%' "
                        f"AND query LIKE '{_PART[reader]}'")[0][0]


@pytest.mark.parametrize("reader", READERS)
def test_a_large_table_is_read_in_parts_in_one_snapshot(postgres_server: PgServer, tmp_path, reader: str) -> None:
    table = f"big_moving_{reader}"
    _make_big(postgres_server, table, reader=reader)
    stop = threading.Event()
    updates = [0]

    def move_rows() -> None:  # every update moves its rows to the table's end: from one part to another
        while not stop.is_set():
            postgres_server.execute(f"UPDATE public.{table} SET v = v + 1 WHERE id % 50 = {updates[0] % 50}")
            updates[0] += 1

    writer = threading.Thread(target=move_rows, daemon=True)
    writer.start()
    rt = _runtime(postgres_server, tmp_path, table)
    try:
        rt.start()
        assert rt.wait_ready(60), rt.status()
        for _ in range(2):
            rt.refresh(table, wait=True)
        stop.set()
        writer.join(30)
        got = rt.query(f"SELECT count(*) AS n, count(DISTINCT id) AS d, min(id) AS lo, max(id) AS hi FROM {table}").read_all()
        assert got.to_pylist() == [{"n": ROWS, "d": ROWS, "lo": 1, "hi": ROWS}]
    finally:
        stop.set()
        rt.stop()
    assert updates[0] > 0
    assert _part_statements(postgres_server, table, reader) >= 2
    # every part's session was committed: none is left idle in a transaction
    assert postgres_server.fetch("SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' "
                                 "AND usename = 'satchel'")[0][0] == 0


def test_a_small_table_is_read_in_one_statement(postgres_server: PgServer, tmp_path) -> None:
    table = "small_whole"
    postgres_server.execute(f"DROP TABLE IF EXISTS public.{table}",
                            f"CREATE TABLE public.{table} AS SELECT g AS id FROM generate_series(1, 1000) g",
                            f"GRANT SELECT ON public.{table} TO satchel")
    rt = _runtime(postgres_server, tmp_path, table)
    try:
        rt.start()
        assert rt.wait_ready(60), rt.status()
        assert rt.query(f"SELECT count(*) AS n FROM {table}").read_all().to_pylist() == [{"n": 1000}]
    finally:
        rt.stop()
    for reader in READERS:
        assert _part_statements(postgres_server, table, reader) == 0


def _active_parts(server: PgServer, table: str) -> int:
    return server.fetch(f"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%{table}%ctid%' "
                        "AND state = 'active' AND pid <> pg_backend_pid()")[0][0]


@pytest.fixture(scope="module")
def huge(postgres_server: PgServer) -> dict[str, str]:
    """Tables larger than what the parts' readers buffer (a few batches each), so their
    statements are still running while the consumer waits."""
    for reader in READERS:
        _make_big(postgres_server, f"big_early_{reader}", 3_000_000, reader)
    return {reader: f"big_early_{reader}" for reader in READERS}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("how", ["dropped", "cancelled"])
def test_a_parallel_read_ended_early_leaves_nothing_running(postgres_server: PgServer, huge: dict[str, str],
                                                            how: str, reader: str) -> None:
    table = huge[reader]
    connector = PostgresConnector(DatasetSpec(name=table, path=f"public.{table}", prefix="postgres",
                                              params=postgres_server.params()))
    scope = CancelScope()
    token = CALLER.set(Caller("runtime", "refresh", None, scope))
    batches = None
    try:
        batches = connector.scan()
        batches.read_next_batch()  # the parts' statements have started; the consumer stops here
        if reader == "adbc":
            assert _active_parts(postgres_server, table) >= 2
        else:  # the extension's sessions wait for the consumer, between parts or inside one
            assert _scan_sessions(postgres_server) >= 1
        if how == "dropped":  # the refresh failed writing, or its consumer went away
            batches = None
        else:  # the refresh's deadline or the runtime stopping
            scope.cancel()
            with pytest.raises(ConnectorError, match="canceling statement"):
                batches.read_all()
    finally:
        batches = None  # a failed assertion must not leave the read open for the next test
        CALLER.reset(token)
        connector.close()

    def left() -> tuple[int, int, int]:
        idle = postgres_server.fetch("SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' "
                                     "AND usename = 'satchel'")[0][0]
        return _active_parts(postgres_server, table), idle, _scan_sessions(postgres_server)

    deadline = time.monotonic() + 5
    while left() != (0, 0, 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left() == (0, 0, 0)  # no statement running, no transaction open, no extension session left


def _scan_sessions(server: PgServer) -> int:
    return server.fetch("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE '% scan-%'")[0][0]


def _waiting_on_lock(server: PgServer) -> int:
    return server.fetch("SELECT count(*) FROM pg_stat_activity WHERE usename = 'satchel' "
                        "AND wait_event_type = 'Lock'")[0][0]


@pytest.mark.parametrize("reader", READERS)
def test_a_read_cancelled_while_waiting_for_a_lock_leaves_nothing_waiting(postgres_server: PgServer,
                                                                          huge: dict[str, str], reader: str) -> None:
    """A refresh stopped while its statements wait behind another session's lock (a migration,
    say) leaves no backend queued on the source: the next one to take the lock is not a
    sidecar's leftover."""
    import adbc_driver_postgresql.dbapi as pg

    table = huge[reader]
    holder = pg.connect(postgres_server.admin_uri())
    cur = holder.cursor()
    cur.execute(f"LOCK TABLE public.{table} IN ACCESS EXCLUSIVE MODE")
    connector = PostgresConnector(DatasetSpec(name=table, path=f"public.{table}", prefix="postgres",
                                              params=postgres_server.params()))
    connector.schema()  # the catalog is read before the lock matters
    scope = CancelScope()
    outcome: list[BaseException | int] = []

    def read() -> None:
        token = CALLER.set(Caller("runtime", "refresh", None, scope))
        try:
            outcome.append(connector.scan().read_all().num_rows)
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            outcome.append(e)
        finally:
            CALLER.reset(token)

    t = threading.Thread(target=read)
    t.start()
    try:
        deadline = time.monotonic() + 20
        while not _waiting_on_lock(postgres_server):
            assert time.monotonic() < deadline, "the read never reached the lock"
            time.sleep(0.05)
        scope.cancel()
        t.join(10)
        assert not t.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], ConnectorError), outcome
        assert "canceling statement" in str(outcome[0]) and "COPY" not in str(outcome[0])
        deadline = time.monotonic() + 5
        while _waiting_on_lock(postgres_server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _waiting_on_lock(postgres_server) == 0  # while the lock is still held
    finally:
        holder.rollback()
        holder.close()
        connector.close()


def test_both_readers_give_the_same_table(postgres_server: PgServer, monkeypatch) -> None:
    """Every type the extension reads comes out as the ADBC path gives it: same Arrow types and
    values, NULLs, extremes and fractions included."""
    import connectors.sql.postgres as pg_connector

    table = "all_scanned_types"
    postgres_server.execute(
        f"DROP TABLE IF EXISTS public.{table}",
        f"""CREATE TABLE public.{table} AS SELECT g AS id,
              (CASE WHEN g % 7 = 0 THEN NULL ELSE (g % 65535) - 32767 END)::int2 AS i2,
              (CASE WHEN g % 7 = 1 THEN NULL ELSE g * 7919 % 2147483647 - 1073741823 END)::int4 AS i4,
              (CASE WHEN g % 7 = 2 THEN NULL ELSE g::int8 * 1000000007 * (1 - 2 * (g % 2)) END) AS i8,
              (CASE WHEN g % 7 = 3 THEN NULL WHEN g % 11 = 0 THEN 'Infinity' ELSE g / 3.0 END)::float4 AS f4,
              (CASE WHEN g % 7 = 4 THEN NULL WHEN g % 13 = 0 THEN '-Infinity' ELSE g / 7.0 - 1e6 END)::float8 AS f8,
              CASE WHEN g % 7 = 5 THEN NULL ELSE g % 2 = 0 END AS b,
              CASE WHEN g % 7 = 6 THEN NULL WHEN g % 5 = 0 THEN '' ELSE 'ünïcødé ' || md5(g::text) END AS t,
              (CASE WHEN g % 9 = 0 THEN NULL ELSE left(md5(g::text), g % 20) END)::varchar(20) AS vc,
              (CASE WHEN g % 9 = 1 THEN NULL ELSE date '1900-01-01' + (g * 37 % 109500) END) AS d,
              (CASE WHEN g % 9 = 2 THEN NULL ELSE timestamp '1960-01-01' + g * interval '1234567 microseconds' END) AS ts,
              (CASE WHEN g % 9 = 3 THEN NULL ELSE timestamptz '2001-02-03 04:05:06+07' - g * interval '1 minute 1 microsecond' END) AS tstz,
              (CASE WHEN g % 9 = 4 THEN NULL ELSE (g * 12345.67) * (1 - 2 * (g % 2)) END)::numeric(15,2) AS n,
              (CASE WHEN g % 9 = 5 THEN NULL ELSE g * 1234567890123.456789 END)::numeric(30,6) AS n30,
              (g % 1000)::numeric(3,0) AS n3
            FROM generate_series(1, 200000) g""",
        f"GRANT SELECT ON public.{table} TO satchel", f"VACUUM ANALYZE public.{table}")
    assert postgres_server.fetch(f"SELECT relpages FROM pg_class WHERE relname = '{table}'")[0][0] >= 2000

    def read() -> pa.Table:
        connector = PostgresConnector(DatasetSpec(name=table, path=f"public.{table}", prefix="postgres",
                                                  params=postgres_server.params()))
        token = CALLER.set(Caller("runtime", "refresh", None, CancelScope()))
        try:
            return connector.scan().read_all().sort_by("id")
        finally:
            CALLER.reset(token)
            connector.close()

    scanned = read()
    assert _part_statements(postgres_server, table, "scanner") >= 2 and _part_statements(postgres_server, table, "adbc") == 0
    monkeypatch.setattr(pg_connector, "extension_path", lambda: None)  # as without the extension's wheel
    adbc = read()
    assert _part_statements(postgres_server, table, "adbc") >= 2
    assert scanned.num_rows == 200_000
    assert scanned.schema.equals(adbc.schema), (scanned.schema, adbc.schema)
    for name in scanned.column_names:
        assert scanned.column(name).equals(adbc.column(name)), name


def test_a_source_the_extension_cannot_reach_is_read_through_adbc(postgres_server: PgServer, huge: dict[str, str],
                                                                  monkeypatch, caplog) -> None:
    """The extension brings its own libpq (TLS, authentication methods): where it cannot connect
    but ADBC just did, the refresh reads through ADBC, says why in a warning that quotes no
    secret (DuckDB quotes the whole connection string, password included), gives the gate
    slots back, and does not try the extension again for a while."""
    import logging
    import socket

    import connectors.sql.pg_scanner as scanner

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    real = scanner.scanner_uri
    tried: list[str] = []

    def unreachable(*args) -> str:
        tried.append(args[1])
        return real(*args).replace(f":{postgres_server.port}/", f":{closed}/")

    monkeypatch.setattr(scanner, "scanner_uri", unreachable)
    table = huge["scanner"]
    params = {**postgres_server.params(), "max_concurrent_statements": "4"}
    connector = PostgresConnector(DatasetSpec(name=table, path=f"public.{table}", prefix="postgres", params=params))
    token = CALLER.set(Caller("runtime", "refresh", None, CancelScope()))
    before = _part_statements(postgres_server, table, "adbc")
    try:
        with caplog.at_level(logging.WARNING, logger="satchel.connectors.sql.postgres"):
            assert connector.scan().read_all().num_rows == 3_000_000
        warning = " ".join(r.getMessage() for r in caplog.records)
        assert "DuckDB's postgres extension cannot reach PostgreSQL" in warning and "ADBC" in warning
        assert postgres_server.password not in warning and "satchel:" not in warning, warning
        assert _part_statements(postgres_server, table, "adbc") > before  # read in parts, every slot free again
        assert connector.scan().read_all().num_rows == 3_000_000
        assert len(tried) == 1  # the second refresh did not try the extension
    finally:
        CALLER.reset(token)
        connector.close()


def _scanner_processes() -> list[int]:
    """This process's children that run the extension's reads (pg_scanner_process)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != os.getpid():
                continue
            if b"connectors.sql.pg_scanner_process" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except (OSError, IndexError, ValueError):  # ended meanwhile
            continue
    return pids


def test_a_crash_in_the_extension_mid_read_is_contained_and_the_refresh_reads_through_adbc(
        postgres_server: PgServer, huge: dict[str, str], tmp_path, caplog) -> None:
    """The extension's native code runs in a process of its own: SIGSEGV there in the middle of a
    read (rows already loading) fails that attempt with how the process ended (no traceback, no
    secret), nothing of it is committed, nothing is left running in PostgreSQL, and the refresh's
    retry reads the table through ADBC, as later refreshes do for a while."""
    import logging

    table = huge["scanner"]
    rt = _runtime(postgres_server, tmp_path, table)
    try:
        rt.start()
        assert rt.wait_ready(120), rt.status()
        assert not _scanner_processes()  # the first load's process is gone
        adbc_before = _part_statements(postgres_server, table, "adbc")
        outcome: dict[str, object] = {}

        def refresh() -> None:
            try:
                outcome["result"] = rt.refresh(table, wait=True)
            except BaseException as e:  # noqa: BLE001 - asserted below
                outcome["error"] = e

        def loading() -> int:
            return {d["name"]: d for d in rt.status()["datasets"]}[table].get("rows_loading") or 0

        with caplog.at_level(logging.WARNING):
            worker = threading.Thread(target=refresh)
            worker.start()
            deadline = time.monotonic() + 30
            while not (pids := _scanner_processes()) or not loading():
                assert time.monotonic() < deadline and worker.is_alive(), "the extension's read never started"
                time.sleep(0.01)
            os.kill(pids[0], signal.SIGSEGV)
            worker.join(120)
        assert outcome.get("result", {}).get("rows") == 3_000_000, outcome
        said = " ".join(r.getMessage() for r in caplog.records)
        assert "postgres extension's process ended (killed by SIGSEGV)" in said and "ADBC" in said, said
        assert "Traceback" not in said and postgres_server.password not in said
        assert _part_statements(postgres_server, table, "adbc") > adbc_before  # the retry, in parts
        got = rt.query(f"SELECT count(*) AS n, count(DISTINCT id) AS d FROM {table}").read_all().to_pylist()
        assert got == [{"n": 3_000_000, "d": 3_000_000}]  # whole, nothing of the crashed attempt
        deadline = time.monotonic() + 10
        while _scan_sessions(postgres_server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _scan_sessions(postgres_server) == 0 and not _scanner_processes()
    finally:
        rt.stop()


@pytest.fixture
def tls_only(postgres_server: PgServer) -> Iterator[None]:
    """TLS on (a self-signed certificate) and the connector's role refused without it, for one
    test; the server as it was afterwards."""
    import os
    import pwd
    import subprocess

    data = postgres_server.root / "data"
    cert, key = data / "satchel-test.crt", data / "satchel-test.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for path in (cert, key):
            os.chown(path, pw.pw_uid, pw.pw_gid)
    key.chmod(0o600)
    hba = data / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"hostnossl all {postgres_server.user} 127.0.0.1/32 reject\n" + original)
    postgres_server.execute("ALTER SYSTEM SET ssl = on", f"ALTER SYSTEM SET ssl_cert_file = '{cert}'",
                            f"ALTER SYSTEM SET ssl_key_file = '{key}'", "SELECT pg_reload_conf()")
    time.sleep(1)  # the postmaster reloads on its own time
    try:
        yield
    finally:
        hba.write_text(original)
        postgres_server.execute("ALTER SYSTEM RESET ssl", "ALTER SYSTEM RESET ssl_cert_file",
                                "ALTER SYSTEM RESET ssl_key_file", "SELECT pg_reload_conf()")
        time.sleep(1)


@pytest.mark.parametrize("reader", READERS)
def test_a_source_that_requires_tls_is_read_in_parts_over_tls(postgres_server: PgServer, tmp_path, tls_only,
                                                              reader: str, caplog) -> None:
    """sslmode=require against a server that refuses the role without TLS: both readers read
    the large table in parts (the extension with its own libpq and TLS), no fallback."""
    import logging

    table = f"big_tls_{reader}"
    _make_big(postgres_server, table, reader=reader)
    import adbc_driver_postgresql.dbapi as pg

    plain = (f"postgresql://{postgres_server.user}:{postgres_server.password}@127.0.0.1:{postgres_server.port}/"
             f"{postgres_server.db}?sslmode=disable")
    with pytest.raises(Exception, match="no encryption"):  # a new session without TLS is refused
        pg.connect(plain).close()
    # its own application_name: its pooled sessions are not counted as other tests' (they outlive it)
    params = {"pg_connection_string": plain.replace("sslmode=disable", "sslmode=require&application_name=satchel-tls")}
    connector = PostgresConnector(DatasetSpec(name=table, path=f"public.{table}", prefix="postgres", params=params))
    token = CALLER.set(Caller("runtime", "refresh", None, CancelScope()))
    before = _part_statements(postgres_server, table, reader)
    try:
        with caplog.at_level(logging.WARNING, logger="satchel.connectors.sql.postgres"):
            got = connector.scan().read_all()
        assert got.num_rows == ROWS and pa.compute.sum(got.column("id")).as_py() == ROWS * (ROWS + 1) // 2
        assert _part_statements(postgres_server, table, reader) > before
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    finally:
        CALLER.reset(token)
        connector.close()


def test_a_large_table_on_a_standby_is_read_in_parts_in_one_snapshot(postgres_server: PgServer) -> None:
    """A hot standby (an agent's sidecar pointed at a read replica) while the primary moves rows:
    the extension is not used there (in recovery its connections do not share one snapshot);
    ADBC's parts do, so the copy is the table of one moment."""
    from tests.integration.postgres_server import start_standby, wait_for

    table = "big_on_standby"
    _make_big(postgres_server, table, reader="scanner")
    standby = start_standby(postgres_server)
    stop = threading.Event()
    updates = [0]

    def move_rows() -> None:  # replayed on the standby while it is read
        while not stop.is_set():
            postgres_server.execute(f"UPDATE public.{table} SET v = v + 1 WHERE id % 50 = {updates[0] % 50}")
            updates[0] += 1

    writer = threading.Thread(target=move_rows, daemon=True)
    try:
        assert standby.fetch("SELECT pg_is_in_recovery()")[0][0] is True
        wait_for(lambda: standby.fetch(f"SELECT count(*) FROM pg_class WHERE relname = '{table}' AND relpages > 0"
                                       )[0][0] == 1, timeout=60)
        params = {**standby.params(), "max_concurrent_statements": "4"}
        connector = PostgresConnector(DatasetSpec(name=table, path=f"public.{table}", prefix="postgres",
                                                  params=params))
        writer.start()
        token = CALLER.set(Caller("runtime", "refresh", None, CancelScope()))
        try:
            for _ in range(2):
                got = connector.scan(["id"]).read_all()
                ids = got.column("id")
                assert got.num_rows == ROWS and pa.compute.count_distinct(ids).as_py() == ROWS
        finally:
            CALLER.reset(token)
            connector.close()
        assert updates[0] > 0
        assert _part_statements(standby, table, "scanner") == 0
        assert _part_statements(standby, table, "adbc") >= 2
    finally:
        stop.set()
        if writer.is_alive():
            writer.join(30)
        standby.stop()
