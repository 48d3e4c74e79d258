"""Opt-in slow lane: Satchel's `adbc:` connector (adbc_driver_spark) against a real Apache
Spark Connect server (the JVM one from the `pyspark[connect]` wheel, `local[2]`, Java 17).

Datasets are Spark's `parquet.`/path`` tables (each ADBC connection is a Spark session of its
own, so no shared catalog is needed): `<table>_sc` live, `<table>_sc_acc` accelerated in
DuckDB. Answers are compared with DuckDB over the same Arrow tables; whole-query push-down is
proven by Satchel's EXPLAIN.

Skipped unless opted in, since Spark needs Java and a JVM start: `pytest -m spark` or
`SATCHEL_TEST_SPARK=1` (see docs/testing.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq
import pytest

from tests.conftest import SatchelServer, free_port
from tests.integration.test_sail import (
    FEDERATED,
    NATION_CSV,
    SAIL_TABLES,
    WHOLE,
    expected,
    explain,
    query,
    rows,
    with_suffix,
)
from tests.integration.sail_server import answering
from tests.processes import start_group, stop_group

pytestmark = [pytest.mark.integration, pytest.mark.spark]

OPT_IN = "SATCHEL_TEST_SPARK"
CONNECT_SERVER = "org.apache.spark.sql.connect.service.SparkConnectServer"


def opted_in(config: pytest.Config) -> bool:
    """True with `SATCHEL_TEST_SPARK=1` or a `-m` expression that selects `spark` positively."""
    if os.environ.get(OPT_IN) == "1":
        return True
    markexpr = str(config.getoption("markexpr", "") or "")
    return "spark" in markexpr and "not spark" not in markexpr


@dataclass
class SparkConnect:
    """A running Spark Connect server (its process group) and where it logs."""

    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def endpoint(self) -> str:
        return f"sc://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def execute(self, sql: str):
        """`sql` in a Spark session of its own; the result as Arrow."""
        import adbc_driver_spark.dbapi as spark

        with spark.connect(self.endpoint, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()

    def stop(self) -> None:
        stop_group(self.process)


def spark_home() -> Path:
    """The Spark distribution inside the pyspark wheel, with its bundled spark-connect jar."""
    pyspark = pytest.importorskip("pyspark", reason='pip install -e ".[spark]" (pyspark[connect] 4.x)')
    home = Path(pyspark.__file__).parent
    if not any((home / "jars").glob("spark-connect_*.jar")):
        pytest.skip(f"no spark-connect jar in {home / 'jars'}: needs pyspark 4.x")
    return home


def start_spark_connect(workdir: Path, timeout: float = 180) -> SparkConnect:
    """`spark-submit --class SparkConnectServer` (offline: the jar ships in the wheel) on a free
    127.0.0.1 port, in the foreground in its own process group; answering when this returns."""
    pytest.importorskip("adbc_driver_spark", reason="pip install adbc-driver-spark (pinned in the test extra)")
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        pytest.skip("Spark Connect needs Java 17 (java on PATH or JAVA_HOME)")
    home = spark_home()
    port = free_port()
    log_path = workdir / f"spark-connect-{port}.log"
    confs = {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.sql.catalogImplementation": "in-memory",
        "spark.sql.warehouse.dir": str(workdir / "warehouse"),
        "spark.local.dir": str(workdir / "local"),
        "spark.sql.shuffle.partitions": "2",
    }
    cmd = [str(home / "bin" / "spark-submit"), "--class", CONNECT_SERVER, "--master", "local[2]",
           "--driver-memory", "768m", "--name", "satchel-spark-connect-test"]
    for key, value in confs.items():
        cmd += ["--conf", f"{key}={value}"]
    cmd.append("spark-internal")  # no application jar: the class is on Spark's own classpath
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1"}
    with open(log_path, "ab") as log:
        proc = start_group(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    return answering(SparkConnect(proc, port, log_path), "Spark Connect", timeout, 0.5)


def pod(endpoint: str, tmp: Path) -> str:
    """`<table>_sc` (live) and `<table>_sc_acc` (DuckDB) `adbc:` datasets over the Parquet files,
    and `nation`, a local CSV file."""
    lines = ["version: v1", "kind: Spicepod", "name: over_spark_connect", "datasets:"]
    for name in SAIL_TABLES:
        source = [f"  - from: 'adbc:\"parquet\".\"{tmp / f'{name}.parquet'}\"'", "    params:",
                  "      adbc_driver: adbc_driver_spark", f"      adbc_uri: {endpoint}"]
        lines += [source[0], f"    name: {name}_sc", *source[1:]]
        lines += [source[0], f"    name: {name}_sc_acc", *source[1:],
                  "    acceleration:", "      enabled: true", "      engine: duckdb"]
    lines += ["  - from: file:nation.csv", "    name: nation"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def spark(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkConnect]:
    """A real Spark Connect server for this module (opt-in), stopped as a process group."""
    if not opted_in(request.config):
        pytest.skip(f"starts a real Spark Connect server (slow): opt in with `pytest -m spark` or {OPT_IN}=1")
    tmp: Path = tmp_path_factory.mktemp("spark_connect")
    started = time.monotonic()
    server = start_spark_connect(tmp)
    print(f"Spark Connect answered after {time.monotonic() - started:.1f}s")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def satchel(spark: SparkConnect, module_satchel_server, tmp_path_factory: pytest.TempPathFactory) -> SatchelServer:
    tmp: Path = tmp_path_factory.mktemp("spark_parquet")
    for name, table in SAIL_TABLES.items():
        pq.write_table(table, tmp / f"{name}.parquet")
    return module_satchel_server(pod(spark.endpoint, tmp), files={"nation.csv": NATION_CSV})


def test_spark_reads_the_parquet_files_itself(spark: SparkConnect, satchel: SatchelServer) -> None:
    """The server is real Spark: it answers with its version and counts the files' rows."""
    version = spark.execute("SELECT version() AS v").column("v")[0].as_py()
    assert version.startswith("4."), version
    assert rows(query(satchel, "SELECT count(*) AS n FROM orders_sc")) == [(len(SAIL_TABLES["orders"]),)]


def test_ungrouped_counts_stream_the_announced_schema(satchel: SatchelServer) -> None:
    """An ungrouped count(*) is the source's own count (Counts): over Flight SQL its `n` is
    non-null, as GetFlightInfo announced, or the ADBC client rejects the stream."""
    sql = "SELECT count(*) AS n FROM orders_sc WHERE o_custkey > 20"
    got = query(satchel, sql)
    assert rows(got) == expected(sql.replace("orders_sc", "orders")) and not got.schema.field("n").nullable


@pytest.mark.parametrize("name", list(WHOLE) + list(FEDERATED))
def test_live_and_accelerated_answers_match_duckdb(satchel: SatchelServer, name: str) -> None:
    sql = {**WHOLE, **FEDERATED}[name]
    want = expected(sql)
    assert rows(query(satchel, with_suffix(sql, "_sc"))) == want
    assert rows(query(satchel, with_suffix(sql, "_sc_acc"))) == want


def test_join_with_a_local_file(satchel: SatchelServer) -> None:
    sql = ("SELECT n.n_name, count(*) AS n, sum(o.o_totalprice) AS revenue FROM orders o "
           "JOIN customer c ON o.o_custkey = c.c_custkey JOIN nation n ON c.c_nationkey = n.n_nationkey "
           "WHERE o.o_comment = 'back\\slash' GROUP BY n.n_name ORDER BY n.n_name")
    want = expected(sql)
    assert want and rows(query(satchel, with_suffix(sql, "_sc"))) == want
    assert "pushed down whole" not in explain(satchel, with_suffix(sql, "_sc"))  # nation is local
    assert rows(query(satchel, with_suffix(sql, "_sc_acc"))) == want


@pytest.mark.parametrize("name", list(WHOLE))
def test_whole_queries_are_pushed_down_to_spark(satchel: SatchelServer, name: str) -> None:
    sql = with_suffix(WHOLE[name], "_sc")
    assert "pushed down whole to adbc:" in explain(satchel, sql)
    assert rows(query(satchel, sql)) == expected(WHOLE[name])


@pytest.mark.parametrize("name", list(FEDERATED))
def test_other_queries_stay_federated(satchel: SatchelServer, name: str) -> None:
    assert "pushed down whole" not in explain(satchel, with_suffix(FEDERATED[name], "_sc"))
