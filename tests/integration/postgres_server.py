"""A throwaway PostgreSQL server for the integration tests (from the OS packages' binaries).

`pg_server()` starts one cluster per test process (initdb + pg_ctl, ~1-2 s) on a free
127.0.0.1 port and stops it at exit; every statement is logged (`log_statement=all`) to
`server.log_path`, so tests can prove what was pushed down, and pg_stat_statements is loaded.

Two roles: `postgres` (superuser, trust over the Unix socket, used by the tests to load data)
and `satchel` (password `SATCHEL_PASSWORD`, SCRAM over TCP) which the connector uses.

No PostgreSQL binaries is a test FAILURE with a clear message, never a skip: CI must not go
green without running these tests.

Import the fixture into a test module with `from tests.integration.postgres_server import
postgres_server  # noqa: F401`; every module shares the same server.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.waiting import wait_for  # noqa: F401 - re-exported for the tests
from tests.processes import kill_processes_in, reap_orphan

SATCHEL_USER = "satchel"
SATCHEL_PASSWORD = "pg-S3cret-Sh0uld-N3ver-Leak"
DB = "satchel_test"


def find_bindir() -> Path:
    """The directory holding initdb/pg_ctl: `pg_config --bindir`, else /usr/lib/postgresql/*/bin."""
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            candidates.append(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                             check=True).stdout.strip())
        except (subprocess.CalledProcessError, OSError):
            pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found: install the OS package "
                "(Debian: apt-get install postgresql) so the PostgreSQL integration tests can run", pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    bindir: Path
    root: Path
    port: int
    log_path: Path
    host: str = "127.0.0.1"
    user: str = SATCHEL_USER
    password: str = SATCHEL_PASSWORD
    db: str = DB

    @property
    def socket_dir(self) -> str:
        return str(self.root)

    def admin_uri(self, db: str | None = None) -> str:
        return f"postgresql://postgres@/{db or self.db}?host={self.root}&port={self.port}"

    def params(self) -> dict[str, str]:
        """The pg_* params of a dataset on this server."""
        return {"pg_host": self.host, "pg_port": str(self.port), "pg_db": self.db, "pg_user": self.user,
                "pg_pass": self.password, "pg_sslmode": "disable"}

    def params_yaml(self, indent: int = 6, password: str | None = None) -> str:
        pad = " " * indent
        p = self.params()
        if password is not None:
            p["pg_pass"] = password
        return "\n".join(f"{pad}{k}: {v}" for k, v in p.items())

    def execute(self, *statements: str, db: str | None = None) -> None:
        """Run statements as the superuser (autocommit)."""
        import adbc_driver_postgresql.dbapi as pg

        with pg.connect(self.admin_uri(db), autocommit=True) as conn:
            with conn.cursor() as cur:
                for sql in statements:
                    cur.execute(sql)

    def fetch(self, sql: str) -> list[tuple]:
        import adbc_driver_postgresql.dbapi as pg

        with pg.connect(self.admin_uri(), autocommit=True) as conn:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()

    def ingest(self, table: str, data, create_sql: str | None = None) -> None:
        """Load an Arrow table (into `create_sql`'s table when given, else ADBC creates it)."""
        import adbc_driver_postgresql.dbapi as pg

        with pg.connect(self.admin_uri(), autocommit=True) as conn:
            with conn.cursor() as cur:
                if create_sql:
                    cur.execute(f'DROP TABLE IF EXISTS {table} CASCADE')
                    cur.execute(create_sql)
                cur.adbc_ingest(table.split(".")[-1].strip('"'), data, mode="append" if create_sql else "create",
                                db_schema_name=table.split(".")[0].strip('"') if "." in table else None)
                cur.execute(f"GRANT SELECT ON {table} TO {SATCHEL_USER}")
                cur.execute(f"ANALYZE {table}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_offset(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def statements_since(self, offset: int) -> list[str]:
        """Statements the server logged since `offset` (from `log_offset()`)."""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        out: list[str] = []
        for line in text.splitlines():
            m = re.search(r"LOG:  (?:statement|execute [^:]*): (.*)", line)
            if m:
                out.append(m.group(1))
            elif out and line.startswith(("\t", " ")):
                out[-1] += "\n" + line.strip()
        return out

    def stop(self) -> None:
        if not self.root.exists():
            return  # stopped already
        pidfile = self.root / "data" / "postmaster.pid"
        postmaster = int(pidfile.read_text().split()[0]) if pidfile.exists() else None
        if postmaster is not None and not reap_orphan(postmaster):
            # no -w: the postmaster is our adopted child (tests/processes.py, subreaper), so pg_ctl
            # would see its zombie as running; we reap it ourselves
            _run_as_postgres([str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-W",
                              "stop"], check=False)
            wait_for(lambda: reap_orphan(postmaster), timeout=30)
        kill_processes_in(self.root)  # backends a dead postmaster left behind (each is its own group)
        shutil.rmtree(self.root, ignore_errors=True)


def _run_as_postgres(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}", pytrace=False)
    return result


def _cluster_root(prefix: str) -> Path:
    """A fresh directory the postgres OS user owns (when running as root)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root but there is no 'postgres' OS user to run the server as", pytrace=False)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    os.chmod(root, 0o755)
    return root


def _start_cluster(bindir: Path, root: Path, settings: str) -> PgServer:
    """`pg_ctl start` of the cluster in `root / "data"` on a free port, with `settings` (`-c ...`)."""
    port = _free_port()
    log_path = root / "postgres.log"
    opts = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c log_statement=all "
            f"-c shared_preload_libraries=pg_stat_statements -c max_connections=100 -c lc_messages=C {settings}")
    _run_as_postgres([str(bindir / "pg_ctl"), "-D", str(root / "data"), "-o", opts, "-l", str(log_path), "-w", "-t",
                      "30", "start"])
    return PgServer(bindir, root, port, log_path)


def start_server() -> PgServer:
    bindir = find_bindir()
    root = _cluster_root("satchel-pg-")
    _run_as_postgres([str(bindir / "initdb"), "-D", str(root / "data"), "-U", "postgres", "--auth-local=trust",
                      "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
    server = _start_cluster(bindir, root, "-c synchronous_commit=off -c full_page_writes=off -c wal_level=logical")
    server.execute(f"CREATE ROLE {SATCHEL_USER} LOGIN PASSWORD '{SATCHEL_PASSWORD}'",
                   f"CREATE DATABASE {DB} OWNER {SATCHEL_USER}", db="postgres")
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(server.admin_uri(), autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return server


def start_standby(primary: PgServer) -> PgServer:
    """A hot standby of `primary` (pg_basebackup, streaming replication) on its own port; the
    caller stops it."""
    root = _cluster_root("satchel-pg-standby-")
    _run_as_postgres([str(primary.bindir / "pg_basebackup"), "-D", str(root / "data"), "-R", "-X", "stream", "-c",
                      "fast", "--no-sync", "-h", primary.socket_dir, "-p", str(primary.port), "-U", "postgres"])
    return _start_cluster(primary.bindir, root, "-c hot_standby=on")


_server: PgServer | None = None
_lock = threading.Lock()


def pg_server() -> PgServer:
    """The process's shared server, started on first use; stopped at session end (at exit at
    the latest)."""
    global _server
    with _lock:
        if _server is None:
            _server = start_server()
            atexit.register(_server.stop)
        return _server


def stop_pg_server() -> None:
    global _server
    with _lock:
        server, _server = _server, None
    if server is not None:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    yield pg_server()
    stop_pg_server()


# -- TPC-H ---------------------------------------------------------------------------------------

TPCH_KEYS = {"region": "r_regionkey", "nation": "n_nationkey", "supplier": "s_suppkey", "customer": "c_custkey",
             "part": "p_partkey", "partsupp": "ps_partkey, ps_suppkey", "orders": "o_orderkey",
             "lineitem": "l_orderkey, l_linenumber"}


def _tpch_pg_type(t) -> str:
    """The PostgreSQL column type of a TPC-H Arrow column."""
    import pyarrow as pa

    for check, name in ((pa.types.is_int32, "integer"), (pa.types.is_int64, "bigint"), (pa.types.is_date, "date"),
                        (pa.types.is_string, "text")):
        if check(t):
            return name
    if pa.types.is_decimal(t):
        return f"numeric({t.precision},{t.scale})"
    raise ValueError(f"unexpected TPC-H type {t}")


def load_tpch(server: "PgServer", con, tables, schema: str) -> None:
    """The TPC-H tables of DuckDB connection `con` (after dbgen) into `schema`, with the keys and
    indexes a real TPC-H schema has (PostgreSQL plans the correlated subqueries with them)."""
    for table in tables:
        data = con.execute(f"SELECT * FROM {table}").to_arrow_table()
        columns = ", ".join(f'"{f.name}" {_tpch_pg_type(f.type)}' for f in data.schema)
        server.ingest(f"{schema}.{table}", data, f"CREATE TABLE {schema}.{table} ({columns})")
    server.execute(*[f"ALTER TABLE {schema}.{t} ADD PRIMARY KEY ({k})" for t, k in TPCH_KEYS.items()],
                   f"CREATE INDEX ON {schema}.lineitem (l_partkey)", f"CREATE INDEX ON {schema}.partsupp (ps_suppkey)",
                   *[f"VACUUM ANALYZE {schema}.{t}" for t in tables])
