"""`satchel sql` (serving/cli.py + serving/sql_client.py) against the real `satchel run`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SATCHEL = Path(sys.executable).with_name("satchel")  # the console script of the installed package


def satchel_sql(*args: str) -> subprocess.CompletedProcess:
    command = [str(SATCHEL)] if SATCHEL.exists() else [sys.executable, "-m", "serving.cli"]
    return subprocess.run(
        [*command, "sql", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_satchel_sql_prints_a_table(satchel_flight):
    done = satchel_sql(
        "--flight",
        f"127.0.0.1:{satchel_flight.port}",
        "select id, city, fare from trips where id <= 3 order by id",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "id | city  | fare",
        "---+-------+-----",
        "1  | oslo  | 1.5 ",
        "2  | lima  | 3.0 ",
        "3  | paris | 4.5 ",
        "(3 rows)",
    ]


def test_satchel_sql_exits_non_zero_with_a_clear_message_for_bad_sql(satchel_flight):
    flight = f"127.0.0.1:{satchel_flight.port}"
    for sql, message in (
        ("selec 1", "error: sql_error: SQL syntax error: SELEC does not start a SQL statement"),
        ("select * from no_such_table", "error: unknown_dataset: unknown table 'no_such_table'"),
    ):
        done = satchel_sql("--flight", flight, sql)
        assert done.returncode == 1
        assert done.stdout == ""
        assert done.stderr.strip().startswith(message), done.stderr
        assert "Traceback" not in done.stderr and "Detail" not in done.stderr


def test_satchel_sql_with_tls_and_an_api_key(satchel_flight_tls, tls_files):
    flight = f"127.0.0.1:{satchel_flight_tls.port}"
    tls = ("--tls-root-certs", str(tls_files.cert_file))
    done = satchel_sql("--flight", flight, *tls, "--api-key", "k-tls", "--format", "csv",
                       "select count(*) as n from trips")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ['"n"', "10000"]
    refused = satchel_sql("--flight", flight, *tls, "select 1")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: unauthenticated: missing API key"), refused.stderr
