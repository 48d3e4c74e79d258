"""A real Iceberg catalog for the tests: pyiceberg's SQL catalog on a SQLite file, with a local
file warehouse, both under a temp directory. No server process is involved: the SQL catalog
is a real Iceberg catalog implementation (metadata JSON, Avro manifests, Parquet data files),
the same code paths a REST or Glue catalog serves.

`IcebergCatalog.params()` gives the pod params a dataset uses to reach it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import DoubleType, LongType, NestedField, StringType, TimestampType

CATALOG_NAME = "satchel_test"


@dataclass
class IcebergCatalog:
    root: Path
    catalog: SqlCatalog

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.root / 'catalog.db'}"

    @property
    def warehouse(self) -> str:
        return f"file://{self.root / 'warehouse'}"

    def params(self) -> dict[str, str]:
        return {"iceberg_catalog_type": "sql", "iceberg_catalog_name": CATALOG_NAME, "iceberg_uri": self.uri,
                "iceberg_warehouse": self.warehouse}

    def params_yaml(self, indent: int = 6) -> str:
        pad = " " * indent
        return "\n".join(f"{pad}{k}: {v}" for k, v in self.params().items())

    def table(self, identifier: str) -> Table:
        return self.catalog.load_table(identifier)

    def create(self, identifier: str, data: pa.Table | None = None, schema=None, partition_spec=None) -> Table:
        namespace = identifier.rsplit(".", 1)[0]
        self.catalog.create_namespace_if_not_exists(namespace)
        if self.catalog.table_exists(identifier):
            self.catalog.drop_table(identifier)
        kwargs = {"partition_spec": partition_spec} if partition_spec is not None else {}
        table = self.catalog.create_table(identifier, schema=schema if schema is not None else data.schema, **kwargs)
        if data is not None:
            table.append(data)
        return table


def make_catalog(root: Path) -> IcebergCatalog:
    root.mkdir(parents=True, exist_ok=True)
    (root / "warehouse").mkdir(exist_ok=True)
    catalog = SqlCatalog(CATALOG_NAME, uri=f"sqlite:///{root / 'catalog.db'}", warehouse=f"file://{root / 'warehouse'}")
    return IcebergCatalog(root, catalog)


# -- the events table: partitioned by day(ts) and identity(region) ---------------------------

EVENTS_SCHEMA = Schema(
    NestedField(1, "id", LongType(), required=False),
    NestedField(2, "region", StringType(), required=False),
    NestedField(3, "ts", TimestampType(), required=False),
    NestedField(4, "amount", DoubleType(), required=False),
)
EVENTS_SPEC = PartitionSpec(
    PartitionField(source_id=3, field_id=1000, transform=DayTransform(), name="ts_day"),
    PartitionField(source_id=2, field_id=1001, transform=IdentityTransform(), name="region"),
)
EVENTS_ARROW = pa.schema([("id", pa.int64()), ("region", pa.string()), ("ts", pa.timestamp("us")),
                          ("amount", pa.float64())])
REGIONS = ("eu", "us", "apac")
DAY0 = dt.datetime(2024, 3, 1)


def events(start: int, count: int, days: int = 3) -> pa.Table:
    """`count` events with ids from `start`, spread over `days` days and the three regions."""
    ids = list(range(start, start + count))
    return pa.table({
        "id": ids,
        "region": [REGIONS[i % 3] for i in ids],
        "ts": [DAY0 + dt.timedelta(days=(i // 3) % days, minutes=i) for i in ids],
        "amount": [float(i) * 1.5 for i in ids],
    }, schema=EVENTS_ARROW)


def create_events(cat: IcebergCatalog, identifier: str = "shop.events", batches: int = 3, per_batch: int = 30) -> Table:
    """The events table with `batches` append snapshots (one per call to append)."""
    table = cat.create(identifier, schema=EVENTS_SCHEMA, partition_spec=EVENTS_SPEC)
    for b in range(batches):
        table.append(events(b * per_batch, per_batch))
    return cat.table(identifier)
