"""Hostile SQL shared by the in-process and the server tests (loaded by path: importlib mode).

`{out}` is a directory the statements try to write into (must stay empty); `{pod}` the pod's
directory (its data files must stay untouched).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HOSTILE = [
    # DDL / DML
    "CREATE TABLE evil (a INT)",
    "CREATE TABLE evil AS SELECT * FROM orders",
    "CREATE VIEW evil AS SELECT 1",
    "CREATE MACRO evil(a) AS a + 1",
    "CREATE SECRET evil (TYPE s3, KEY_ID 'x', SECRET 'y')",
    "DROP TABLE orders",
    "DROP VIEW order_details",
    "INSERT INTO orders (order_id) VALUES (1)",
    "INSERT INTO orders SELECT * FROM orders",
    "UPDATE orders SET amount = 0",
    "DELETE FROM orders",
    "ALTER TABLE orders ADD COLUMN evil INT",
    "ALTER TABLE orders RENAME TO evil",
    "TRUNCATE orders",
    "MERGE INTO orders USING customers ON true WHEN MATCHED THEN DELETE",
    # files, databases, extensions, settings
    "COPY orders TO '{out}/copy.csv'",
    "COPY (SELECT * FROM orders) TO '{out}/copy.parquet' (FORMAT parquet)",
    "COPY orders FROM '/etc/passwd'",
    "ATTACH '{out}/evil.db' AS evil",
    "ATTACH ':memory:' AS evil",
    "DETACH evil",
    "INSTALL httpfs",
    "LOAD httpfs",
    "PRAGMA database_list",
    "PRAGMA enable_profiling",
    "SET enable_external_access = true",
    "SET threads = 1",
    "RESET threads",
    "CALL pragma_version()",
    "EXPORT DATABASE '{out}/export'",
    "IMPORT DATABASE '{out}/export'",
    "CHECKPOINT",
    "VACUUM",
    "BEGIN TRANSACTION",
    # reading local files
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_csv_auto('/etc/passwd')",
    "SELECT * FROM read_parquet('{pod}/data/orders/part-0.parquet')",
    "SELECT * FROM read_json('{pod}/data/products.ndjson')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM '{pod}/data/customers.csv'",
    'SELECT * FROM "data/regions.csv"',
    "SELECT * FROM parquet_metadata('{pod}/data/orders/part-0.parquet')",
    "SELECT * FROM sniff_csv('/etc/passwd')",
    "SELECT * FROM orders UNION ALL SELECT * FROM read_parquet('{pod}/data/orders/part-0.parquet')",
    "SELECT (SELECT count(*) FROM read_csv('/etc/passwd')) AS n",
    "SELECT o.order_id FROM orders o JOIN read_csv('/etc/passwd') p ON true",
    # settings, environment, engine state
    "SELECT current_setting('memory_limit')",
    "SELECT current_setting('memory_limit') FROM orders LIMIT 1",
    "SELECT getenv('HOME')",
    "SELECT * FROM customers WHERE name = getenv('HOME')",
    "SELECT getvariable('x')",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM duckdb_tables()",
    "SELECT * FROM pragma_table_info('orders')",
    "SELECT * FROM query('SELECT * FROM orders')",
    "SELECT nextval('seq')",
    # multi-statement strings
    "SELECT 1; DROP TABLE orders",
    "SELECT * FROM orders; DELETE FROM orders",
    "select 1;;select 2",
    "SeLeCt 1; dRoP tAbLe orders",
    "BEGIN; DELETE FROM orders; COMMIT",
    # writes hidden in reads
    "WITH x AS (DELETE FROM orders RETURNING *) SELECT * FROM x",
    "WITH x AS (INSERT INTO orders (order_id) VALUES (1) RETURNING *) SELECT * FROM x",
    "WITH x AS (UPDATE orders SET amount = 0 RETURNING *) SELECT count(*) FROM x",
    "SELECT * INTO evil FROM orders",
    "SELECT * FROM orders FOR UPDATE",
    "SELECT * FROM orders FOR SHARE",
    "EXPLAIN DELETE FROM orders",
    "/* hello */ DROP TABLE orders",
    "-- hello\nDELETE FROM orders",
]

TABLES = ["orders", "customers", "products", "regions"]


def render(sql: str, out: Path, pod: Path) -> str:
    return sql.replace("{out}", str(out)).replace("{pod}", str(pod))


def files_digest(root: Path) -> dict[str, str]:
    """Every file under `root` (except logs and the file-mode data dir) -> its sha256."""
    digest = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.endswith(".log") and ".satchel" not in path.parts:
            digest[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest
