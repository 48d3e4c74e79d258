"""`from: flightsql:<table or query>` — a table (or a query) of a remote Arrow Flight SQL server,
read through the ADBC Flight SQL driver (Go, streaming Arrow batches, no Python per row).

Params: `flightsql_endpoint` (grpc://host:port, grpc+tcp://, grpc+tls://), credentials
`flightsql_token` (sent as `Authorization: Bearer`) or `flightsql_username` / `flightsql_password`
(basic auth handshake), TLS `flightsql_tls_ca_cert` (a PEM file, relative to the pod) and
`flightsql_tls_skip_verify`, `flightsql_dialect` (auto | satchel | datafusion | spark | generic)
and `connection_pool_size`. Secrets never appear in errors, logs or `source_id`.

The dialect says what may be pushed to the server (see connectors/sql/filters.py):
`satchel` (another Satchel: same public dialect and semantics, whole queries go down),
`datafusion` (roapi and other DataFusion servers: whole queries without float columns and
within a conservative set of operations, filters except on floats), `generic` (an unknown
server: projection, limit and only the simplest filters), `spark` (Sail and other Spark SQL
servers: Spark's quoting and literals; filters except on floats; whole queries within the
DataFusion set minus division, without float or timestamp columns, rendered by sqlglot's
"spark" dialect with explicit NULLS FIRST/LAST). `auto` (default) asks the server's SqlInfo
vendor name: Satchel -> satchel, RoAPI / DataFusion -> datafusion, else generic (Sail calls
itself "Flight SQL": say `spark`).

Servers without the catalog calls (Sail answers GetTables and GetExecuteSchema with
UNIMPLEMENTED) are asked for the schema by `SELECT * FROM <table> LIMIT 0`.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any, Sequence

import adbc_driver_flightsql as adbc_fs
import adbc_driver_flightsql.dbapi as fs_dbapi
import pyarrow as pa

from engine.errors import ConnectorError

from ..base import DatasetSpec
from ..params import check_params, check_type_action, parse_bool
from .adbc_source import AdbcSqlSource, parse_pool_size
from .filters import DIALECTS
from .pool import GATE_PARAMS, close_quietly

PARAMS = ("flightsql_endpoint", "flightsql_username", "flightsql_password", "flightsql_token",
          "flightsql_tls_ca_cert", "flightsql_tls_skip_verify", "flightsql_dialect", "connection_pool_size") + GATE_PARAMS
FLIGHTSQL_DIALECTS = ("auto", "satchel", "datafusion", "spark", "generic")
_SCHEMES = ("grpc://", "grpc+tcp://", "grpc+tls://")


def dialect_of_vendor(vendor: str) -> str:
    """The dialect `auto` picks for a server's FLIGHT_SQL_SERVER_NAME."""
    name = vendor.lower()
    if name.startswith("satchel"):
        return "satchel"
    if "roapi" in name or "datafusion" in name:
        return "datafusion"
    return "generic"


class FlightSqlConnector(AdbcSqlSource):
    kind = "Flight SQL"

    def __init__(self, spec: DatasetSpec) -> None:
        p = dict(spec.params)
        check_params(spec.name, "flightsql", p, PARAMS)
        check_type_action(spec.name, spec.unsupported_type_action)
        endpoint = (p.get("flightsql_endpoint") or "").strip()
        if not endpoint:
            raise ConnectorError(f"dataset '{spec.name}': param flightsql_endpoint is required "
                                 f"(grpc://host:port or grpc+tls://host:port)")
        if not endpoint.startswith(_SCHEMES) or "@" in endpoint:
            raise ConnectorError(f"dataset '{spec.name}': param flightsql_endpoint must be grpc://host:port, "
                                 f"grpc+tcp://host:port or grpc+tls://host:port (credentials go in "
                                 f"flightsql_token or flightsql_username/flightsql_password)")
        token, user, password = p.get("flightsql_token"), p.get("flightsql_username"), p.get("flightsql_password")
        if token and (user or password):
            raise ConnectorError(f"dataset '{spec.name}': give either flightsql_token or "
                                 f"flightsql_username/flightsql_password, not both")
        if password and not user:
            raise ConnectorError(f"dataset '{spec.name}': flightsql_password needs flightsql_username")
        dialect = p.get("flightsql_dialect", "auto").strip().lower()
        if dialect not in FLIGHTSQL_DIALECTS:
            raise ConnectorError(f"dataset '{spec.name}': unknown flightsql_dialect '{dialect}'; "
                                 f"allowed: {', '.join(FLIGHTSQL_DIALECTS)}")
        options: dict[str, str] = {}
        if token:
            options[adbc_fs.DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {token}"
        if user:
            options["username"] = user
            if password:
                options["password"] = password
        tls = endpoint.startswith("grpc+tls://")
        ca = p.get("flightsql_tls_ca_cert")
        skip = parse_bool(spec.name, "flightsql_tls_skip_verify", p.get("flightsql_tls_skip_verify", "false"))
        if (ca or skip) and not tls:
            raise ConnectorError(f"dataset '{spec.name}': flightsql_tls_ca_cert / flightsql_tls_skip_verify need a "
                                 f"grpc+tls:// flightsql_endpoint")
        if ca:
            path = ca if os.path.isabs(ca) else os.path.join(spec.base_dir, ca)
            try:
                with open(path, encoding="utf-8") as fh:
                    options[adbc_fs.DatabaseOptions.TLS_ROOT_CERTS.value] = fh.read()
            except OSError as e:
                raise ConnectorError(f"dataset '{spec.name}': cannot read flightsql_tls_ca_cert '{ca}': "
                                     f"{e.strerror}") from None
        if skip:
            options[adbc_fs.DatabaseOptions.TLS_SKIP_VERIFY.value] = "true"
        self.endpoint = endpoint
        self._options = options
        self.secrets = tuple(s for s in (token, password) if s)
        self._dialect_param = dialect
        self._dialect: str | None = None if dialect == "auto" else dialect
        self._dialect_lock = threading.Lock()
        ident = endpoint + (f";user={user}" if user else "")
        secret = token or password
        if secret:  # another credential is another identity (a digest, never the secret itself)
            ident += ";auth=" + hashlib.sha256(secret.encode()).hexdigest()[:12]
        self._source_id = "flightsql:" + ident
        super().__init__(spec, parse_pool_size(spec))

    # -- identity and dialect --

    def quote(self, name: str) -> str:
        return DIALECTS["spark"].ident(name) if self._dialect_param == "spark" else super().quote(name)

    @property
    def source_id(self) -> str:
        return self._source_id

    @property
    def sql_dialect(self) -> str:  # type: ignore[override]
        return self.dialect()

    @property
    def filter_dialect(self):  # type: ignore[override]
        return DIALECTS[self.dialect()]

    def dialect(self) -> str:
        """The server's dialect (`auto`: from its SqlInfo vendor name, asked once)."""
        with self._dialect_lock:
            if self._dialect is None:
                conn, _ = self._acquire()
                try:
                    info = conn.adbc_get_info()
                finally:
                    self._pool.release(conn, True)
                self._dialect = dialect_of_vendor(str(info.get("vendor_name") or ""))
            return self._dialect

    def pushdown_safe(self, columns: Sequence[str] | None) -> bool:
        dialect = self.dialect()
        if dialect not in ("satchel", "datafusion", "spark"):
            return False
        schema = self.schema()
        names = list(columns) if columns is not None else schema.names
        if any(n in self._converted or n not in schema.names for n in names):
            return False
        if dialect == "datafusion":  # -0.0 / NaN compare and group in total order there
            return not any(pa.types.is_floating(schema.field(n).type) for n in names)
        if dialect == "spark":
            return self._spark_pushdown_safe(columns)
        return True

    # -- ADBC --

    def _connect(self) -> Any:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Cannot disable autocommit": reads only
            return fs_dbapi.connect(self.endpoint, db_kwargs=dict(self._options), autocommit=True)

    def _acquire(self):
        try:
            conn, reused = self._pool.acquire()
        except Exception as e:  # noqa: BLE001
            raise self._error("cannot connect to the Flight SQL server", e) from None
        return conn, reused

    def _remote_schema(self) -> pa.Schema:
        """From GetTables (with schemas) or the statement's GetFlightInfo: no data is fetched."""
        conn, _ = self._acquire()
        healthy = False
        try:
            try:
                if self.query_text is not None:
                    cur = conn.cursor()
                    try:
                        schema = cur.adbc_execute_schema(self.query_text)
                    finally:
                        close_quietly(cur)
                else:
                    schema = self._table_schema(conn)
            except Exception as e:  # noqa: BLE001
                if "NOT_IMPLEMENTED" not in str(e) and "Unimplemented" not in str(e):
                    raise
                try:
                    schema = self._schema_by_empty_query(conn)
                except Exception as e2:  # noqa: BLE001
                    if self._dialect_param == "spark" or "parse error" not in str(e2).lower():
                        raise
                    raise self._error("cannot read the schema from the Flight SQL server "
                                      f"{self.endpoint} (it has no catalog calls and did not parse "
                                      f"`SELECT * FROM {self.relation_sql} LIMIT 0`; a Spark SQL server "
                                      f"such as Sail needs flightsql_dialect: spark)", e2) from None
            healthy = True
            return schema
        except ConnectorError:
            raise
        except Exception as e:  # noqa: BLE001
            text = str(e)
            if ("NOT_FOUND" in text or "TABLE_OR_VIEW_NOT_FOUND" in text) and self.query_text is None:
                raise ConnectorError(f"dataset '{self.spec.name}': table {'.'.join(self.table_parts)} not found on "
                                     f"the Flight SQL server {self.endpoint}") from None
            if "UNAUTHENTICATED" in text or "Unauthenticated" in text or "too many wrong API keys" in text:
                # a Satchel peer that was sent wrong keys again and again throttles them (overloaded)
                raise super()._error(f"the Flight SQL server {self.endpoint} refused the credentials", e) from None
            raise self._error(f"cannot read the schema from the Flight SQL server {self.endpoint}", e) from None
        finally:
            self._pool.release(conn, healthy)

    def _schema_by_empty_query(self, conn: Any) -> pa.Schema:
        """The schema of `SELECT * FROM <relation> LIMIT 0` (for servers without GetTables / GetExecuteSchema)."""
        cur = conn.cursor()
        try:
            cur.execute(f"SELECT * FROM {self.relation_sql} LIMIT 0")
            return cur.fetch_record_batch().schema
        finally:
            close_quietly(cur)

    def _error(self, what: str, e: BaseException) -> ConnectorError:
        err = super()._error(what, e)
        if "connection error" in err.message or "Unavailable" in err.message:
            return ConnectorError(f"dataset '{self.spec.name}': cannot connect to the Flight SQL server "
                                  f"{self.endpoint}: {err.message.split(': ', 2)[-1]}")
        return err

    def __repr__(self) -> str:
        return f"FlightSqlConnector({self.spec.name!r}, {self.source_id!r})"
