"""`from: adbc:<table or query>` — a table of any database with an installed ADBC driver,
loaded through adbc-driver-manager.

Params:
- `adbc_driver` (required): a Python module that ships a driver (`adbc_driver_sqlite`,
  `adbc_driver_postgresql`, ...: its `_driver_path()` is loaded), a shared-library path, or a
  driver name the driver manager resolves (e.g. `adbc_driver_duckdb`'s library, a manifest name);
- `adbc_entrypoint`: the library's init function when not the default;
- `adbc_uri`: the database URI the driver takes (may hold credentials: treated as a secret);
- `adbc_options`: more database options as `key=value;key=value`, and `adbc_option_<key>`:
  one option each (values are treated as secrets: never echoed);
- `adbc_dialect`: how to render pushed filters (sqlite | postgres | spark | generic); by
  default from the driver (sqlite, postgresql, spark), else generic;
- `connection_pool_size` (default 4).

Projection, the filters the dialect evaluates exactly (see connectors/sql/filters.py) and
the limit go to the database; whole-query push-down is left to the dedicated connectors
(postgres:, flightsql:), whose semantics are checked server by server, except `spark`
(Spark Connect through adbc-driver-spark, e.g. to Sail): whole queries in Spark SQL, as for
flightsql_dialect spark (engine/query/pushdown.py).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import warnings
from typing import Any, Sequence

import adbc_driver_manager
import adbc_driver_manager.dbapi as dm
import pyarrow as pa

from engine.errors import ConnectorError, MissingDependency

from ..base import DatasetSpec
from ..params import check_type_action
from .adbc_source import AdbcSqlSource, parse_pool_size
from .filters import DIALECTS
from .pool import GATE_PARAMS, close_quietly

PARAMS = ("adbc_driver", "adbc_entrypoint", "adbc_uri", "adbc_options", "adbc_dialect", "connection_pool_size") + GATE_PARAMS
OPTION_PREFIX = "adbc_option_"
ADBC_DIALECTS = ("sqlite", "postgres", "spark", "generic")


def resolve_driver(dataset: str, driver: str) -> tuple[str, str]:
    """(what to load, dialect guess) for an `adbc_driver` value."""
    name = driver.strip()
    lower = name.lower()
    guess = next((d for d in ("sqlite", "postgres", "spark") if d in lower), "generic")
    if re.fullmatch(r"[A-Za-z_][\w.]*", name) and not name.endswith((".so", ".dylib", ".dll")):
        try:
            module = importlib.import_module(name)
        except ImportError:
            module = None
        if module is not None:
            path = getattr(module, "_driver_path", None)
            if callable(path):
                return str(path()), guess
            raise ConnectorError(f"dataset '{dataset}': adbc_driver '{name}' is a Python module without an ADBC "
                                 f"driver (_driver_path)")
        if name.startswith("adbc_driver_"):
            raise MissingDependency(f"dataset '{dataset}': adbc_driver '{name}' is not installed: "
                                    f"pip install {name.replace('_', '-')}")
        return name, guess  # a driver name the driver manager resolves (manifest / library search)
    if not os.path.exists(name):
        raise ConnectorError(f"dataset '{dataset}': adbc_driver '{name}' does not exist (give a Python module such "
                             f"as adbc_driver_sqlite, a shared-library path or a driver name)")
    return name, guess


def parse_options(dataset: str, params: dict[str, str]) -> dict[str, str]:
    options: dict[str, str] = {}
    text = params.get("adbc_options") or ""
    for part in filter(None, (x.strip() for x in text.split(";"))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConnectorError(f"dataset '{dataset}': param adbc_options must be 'key=value;key=value' "
                                 f"(an entry has no '=')")
        options[key.strip()] = value.strip()
    for key, value in params.items():
        if key.startswith(OPTION_PREFIX) and len(key) > len(OPTION_PREFIX):
            options[key[len(OPTION_PREFIX):]] = str(value)
    return options


class AdbcConnector(AdbcSqlSource):
    kind = "ADBC"

    def __init__(self, spec: DatasetSpec) -> None:
        p = {k: str(v) for k, v in spec.params.items()}
        unknown = sorted(k for k in p if k not in PARAMS and not k.startswith(OPTION_PREFIX))
        if unknown:
            raise ConnectorError(f"dataset '{spec.name}': unknown param(s) {', '.join(unknown)} for the adbc connector; "
                                 f"allowed: {', '.join(PARAMS)}, {OPTION_PREFIX}<key>")
        check_type_action(spec.name, spec.unsupported_type_action)
        if not p.get("adbc_driver"):
            raise ConnectorError(f"dataset '{spec.name}': param adbc_driver is required (e.g. adbc_driver_sqlite, "
                                 f"adbc_driver_postgresql, or a driver library path)")
        self.driver, guess = resolve_driver(spec.name, p["adbc_driver"])
        dialect = p.get("adbc_dialect", guess).strip().lower()
        if dialect not in ADBC_DIALECTS:
            raise ConnectorError(f"dataset '{spec.name}': unknown adbc_dialect '{dialect}'; allowed: "
                                 f"{', '.join(ADBC_DIALECTS)}")
        self.dialect = dialect
        self.filter_dialect = DIALECTS[dialect]
        self.sql_dialect = dialect
        self._options = parse_options(spec.name, p)
        self._uri = p.get("adbc_uri")
        self._entrypoint = p.get("adbc_entrypoint")
        self.secrets = tuple(s for s in [self._uri, *self._options.values()] if s and len(s) >= 4)
        digest = hashlib.sha256(repr((self.driver, self._uri, sorted(self._options.items()))).encode()).hexdigest()
        self._source_id = f"adbc:{os.path.basename(self.driver)};{digest[:16]}"
        super().__init__(spec, parse_pool_size(spec))

    @property
    def source_id(self) -> str:
        return self._source_id

    def quote(self, name: str) -> str:
        return DIALECTS["spark"].ident(name) if self.dialect == "spark" else super().quote(name)

    def pushdown_safe(self, columns: Sequence[str] | None) -> bool:
        return self.dialect == "spark" and self._spark_pushdown_safe(columns)

    def _connect(self) -> Any:
        kwargs = dict(self._options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Cannot disable autocommit": reads only
            conn = dm.connect(driver=self.driver, uri=self._uri, entrypoint=self._entrypoint,
                              db_kwargs=kwargs, autocommit=True)
        if self.dialect == "sqlite":
            cur = conn.cursor()
            try:  # LIKE as the Filter contract means it: case-sensitive, no escape character
                cur.execute("PRAGMA case_sensitive_like = ON")
            finally:
                close_quietly(cur)
        return conn

    def _remote_schema(self) -> pa.Schema:
        try:
            conn, _ = self._pool.acquire()
        except adbc_driver_manager.Error as e:
            raise self._error("cannot open the ADBC database", e) from None
        except Exception as e:  # noqa: BLE001
            raise self._error("cannot load the ADBC driver", e) from None
        healthy = False
        try:
            if self.query_text is not None:
                schema = self._query_schema(conn)
            else:
                try:
                    schema = self._table_schema(conn)
                except adbc_driver_manager.Error as e:
                    if "NOT_FOUND" in str(e) or "not found" in str(e).lower() or "no such table" in str(e).lower():
                        raise ConnectorError(f"dataset '{self.spec.name}': table {'.'.join(self.table_parts)} not found in the "
                                             f"ADBC database") from None
                    raise
            healthy = True
            return schema
        except ConnectorError:
            raise
        except Exception as e:  # noqa: BLE001
            raise self._error("cannot read the schema from the ADBC database", e) from None
        finally:
            self._pool.release(conn, healthy)

    def _query_schema(self, conn: Any) -> pa.Schema:
        """ExecuteSchema where the driver has it; else the types of `LIMIT 0` (SQLite: declared
        types are only known from data, so give `columns[].type` in the pod for such queries)."""
        cur = conn.cursor()
        try:
            try:
                return cur.adbc_execute_schema(self.query_text)
            except adbc_driver_manager.NotSupportedError:
                cur.execute(f"SELECT * FROM {self.relation_sql} LIMIT 0")
                return cur.fetch_record_batch().schema
        finally:
            close_quietly(cur)

    def __repr__(self) -> str:
        return f"AdbcConnector({self.spec.name!r}, {self.source_id!r})"
