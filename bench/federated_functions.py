"""Functions the federated engine runs through Python, on the Arrow route, vs the DuckDB route
(DuckDB itself), through Flight SQL, side by side: reading JSON text (DuckDB's JSON functions
a batch at a time) and mode() (an aggregate over batches). The same file accelerated both ways,
the queries alternating run by run.

    /tmp/venv/bin/python bench/federated_functions.py [--rows 1000000] [--runs 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, adbc_connect, percentile, satchel, table, write_results  # noqa: E402

QUERIES = {
    "filter on a key": "SELECT count(*) AS n FROM {t} WHERE payload ->> 'name' = 'n7'",
    "group by a nested key": "SELECT payload -> 'nested' ->> 'b' AS b, count(*) AS n FROM {t} GROUP BY 1 ORDER BY 1",
    "sum of a number in the JSON": "SELECT sum((payload ->> 'n')::bigint) AS s FROM {t}",
    "jsonb @> containment": """SELECT count(*) AS n FROM {t} WHERE payload @> '{{"nested": {{"b": 3}}}}'""",
    "mode() of a key, 7 groups": "SELECT payload -> 'nested' ->> 'b' AS b, mode() WITHIN GROUP (ORDER BY id % 100) AS m "
                                 "FROM {t} GROUP BY 1 ORDER BY 1",
    "mode() of 1000 distinct values": "SELECT mode() WITHIN GROUP (ORDER BY id % 1000) AS m FROM {t}",
    "neither (the routes' own gap)": "SELECT count(*) AS n FROM {t} WHERE id % 7 = 3",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    data = DATA / f"json_docs_{args.rows}.parquet"
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        duckdb.execute(f"""COPY (SELECT range AS id, json_object('name', 'n' || (range % 1000), 'n', range,
            'nested', json_object('b', range % 7), 'tags', ['x', 'y'])::VARCHAR AS payload
            FROM range({args.rows})) TO '{data}'""")
    pod = f"""version: v1
kind: Spicepod
name: federated-functions
datasets:
  - from: file:{data}
    name: docs_arrow
    acceleration: {{engine: arrow}}
  - from: file:{data}
    name: docs_duckdb
    acceleration: {{engine: duckdb}}
"""
    times: dict[tuple[str, str], list[float]] = {}
    with satchel(DATA / "pods" / "federated_functions", pod) as server, \
            adbc_connect(f"grpc://127.0.0.1:{server.flight_port}") as conn, conn.cursor() as cur:
        for run in range(args.runs + 1):  # the first run warms both up
            for label, sql in QUERIES.items():
                answers = []
                for route in ("docs_arrow", "docs_duckdb"):
                    started = time.perf_counter()
                    cur.execute(sql.format(t=route))
                    answers.append(cur.fetch_arrow_table())
                    if run:
                        times.setdefault((label, route), []).append(time.perf_counter() - started)
                assert answers[0].to_pylist() == answers[1].to_pylist(), (label, answers)
    rows, figures = [], []
    for label in QUERIES:
        arrow, duck = (percentile(times[(label, r)], 50) for r in ("docs_arrow", "docs_duckdb"))
        rows.append([label, f"{arrow * 1000:.0f}", f"{duck * 1000:.0f}", f"{arrow / duck:.2f}x"])
        figures.append((f"Arrow route vs DuckDB route: {label}", f"{arrow / duck:.2f}x",
                        "none (a new capability's figure, to catch regressions)"))
    body = (f"{args.rows:,} rows of JSON text, accelerated both ways from one Parquet file; Flight SQL (ADBC), "
            f"median of {args.runs} runs, the routes alternating; the answers are checked equal.\n\n"
            + table(["query", "Arrow route ms", "DuckDB route ms", "Arrow / DuckDB"], rows))
    print(body)
    write_results("federated_functions", "JSON reads and mode(): the Arrow route vs the DuckDB route", body, figures)


if __name__ == "__main__":
    main()
