"""The Flight SQL server through real clients: ADBC (Go driver), flightsql-dbapi, pyarrow.flight.

Most tests run against the REAL `satchel run` subprocess (session-scoped fixtures
`satchel_flight`, `satchel_flight_auth`, `satchel_flight_tls`, `satchel_flight_not_ready` in
tests/serving/conftest.py): pod with `trips` (10,000 rows, DuckDB-accelerated, primary key id),
`cities` (3 rows, read live from CSV), the view `trip_cities` and `runtime.task_history`.

The tests at the end (section "test double") look inside the server (open handle counts, handle
TTLs, injected failures) and run against an in-process server over the DuckDB runtime TEST
DOUBLE (tests/serving/duckdb_runtime_double.py) through `double_endpoint` / `start_double_flight`.
"""

from __future__ import annotations

import time

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pytest
from adbc_driver_flightsql import DatabaseOptions
from adbc_driver_manager import AdbcStatusCode
from flightsql import FlightSQLClient, TableRef, connect
from google.protobuf import any_pb2
from pyarrow import flight

from engine.errors import QueryTimeout
from engine.query.datafusion_worker import BATCH_ROWS
from engine.task_history import SCHEMA as TASK_HISTORY_SCHEMA
from serving.flight_sql import catalog
from serving.flight_sql import info
from serving.flight_sql import flight_sql_pb2 as pb
from serving.flight_sql.server import _batches, _head

# ---------------------------------------------------------------------- helpers


def adbc_connect(endpoint, **db_kwargs):
    if endpoint.api_key and not db_kwargs:
        db_kwargs = {DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {endpoint.api_key}"}
    if endpoint.ca_cert:
        db_kwargs[DatabaseOptions.TLS_ROOT_CERTS.value] = endpoint.ca_cert.decode()
    return adbc.connect(endpoint.uri, db_kwargs=db_kwargs, autocommit=True)


def sql_client(endpoint, **kwargs) -> FlightSQLClient:
    """flightsql-dbapi's client (bearer token unless user/password given)."""
    if endpoint.ca_cert:
        kwargs.setdefault("tls_root_certs", endpoint.ca_cert)
    else:
        kwargs.setdefault("insecure", True)
    if "user" not in kwargs:
        kwargs.setdefault("token", endpoint.api_key or "")
    return FlightSQLClient(host=endpoint.host, port=endpoint.port, **kwargs)


def raw_client(endpoint) -> tuple[flight.FlightClient, flight.FlightCallOptions]:
    client = flight.connect(endpoint.uri, tls_root_certs=endpoint.ca_cert)
    headers = (
        [(b"authorization", f"Bearer {endpoint.api_key}".encode())] if endpoint.api_key else []
    )
    return client, flight.FlightCallOptions(headers=headers)


def descriptor(message) -> flight.FlightDescriptor:
    packed = any_pb2.Any()
    packed.Pack(message)
    return flight.FlightDescriptor.for_command(packed.SerializeToString())


def action(kind: str, message) -> flight.Action:
    packed = any_pb2.Any()
    packed.Pack(message)
    return flight.Action(kind, packed.SerializeToString())


def fetch(client: FlightSQLClient, flight_info: flight.FlightInfo) -> pa.Table:
    return client.do_get(flight_info.endpoints[0].ticket).read_all()


def prepare_raw(client, options, sql: str) -> pb.ActionCreatePreparedStatementResult:
    [result] = list(
        client.do_action(
            action("CreatePreparedStatement", pb.ActionCreatePreparedStatementRequest(query=sql)),
            options,
        )
    )
    packed = any_pb2.Any()
    packed.ParseFromString(result.body.to_pybytes())
    out = pb.ActionCreatePreparedStatementResult()
    assert packed.Unpack(out)
    return out


# ---------------------------------------------------------------------- queries


def test_adbc_query_streams_the_whole_result(satchel_flight):
    endpoint = satchel_flight
    with adbc_connect(endpoint) as conn, conn.cursor() as cur:
        cur.execute("select id, city, fare from trips order by id")
        table = cur.fetch_arrow_table()
    assert table.num_rows == 10_000
    assert table.column("id").to_pylist()[:3] == [1, 2, 3]
    assert table.schema.field("fare").type == pa.float64()


def test_doget_streams_batches_without_materialising(satchel_flight):
    client, options = raw_client(satchel_flight)
    # trips (DuckDB) joined with cities (CSV source), four times over, runs in the federated
    # engine, whose result comes in several batches; DoGet must pass them on one by one.
    info_ = client.get_flight_info(
        descriptor(pb.CommandStatementQuery(query="select t.* from trip_cities t, generate_series(1, 4) g")), options
    )
    reader = client.do_get(info_.endpoints[0].ticket, options)
    chunks = [chunk.data.num_rows for chunk in reader]
    assert sum(chunks) == 4 * 10_000 > BATCH_ROWS
    assert len(chunks) > 1  # the runtime's batches arrive one by one
    assert reader.schema == info_.schema


def test_adbc_parameterised_queries_bind_positionally(satchel_flight):
    endpoint = satchel_flight
    with adbc_connect(endpoint) as conn, conn.cursor() as cur:
        cur.execute("select id, city from trips where id = ?", (5,))
        assert cur.fetchall() == [(5, "lima")]
        cur.execute("select id, city from trips where id = ?", (7,))  # same statement, new binding
        assert cur.fetchall() == [(7, "oslo")]
        cur.execute("select $1::bigint + $2::bigint as total", (40, 2))
        assert cur.fetchall() == [(42,)]


def test_adbc_binds_a_batch_of_parameter_sets(satchel_flight):
    endpoint = satchel_flight
    params = pa.record_batch({"id": pa.array([2, 4, 6], pa.int64())})
    with adbc_connect(endpoint) as conn, conn.cursor() as cur:
        cur.execute("select id, fare from trips where id = ?", params)
        assert cur.fetchall() == [(2, 3.0), (4, 6.0), (6, 9.0)]


def test_an_upload_of_parameters_past_the_limit_is_refused_as_it_arrives(satchel_flight):
    """Each bound row is one query: a client binding a million rows (or gigabytes) must not fill
    the sidecar's memory nor queue a million queries. The refusal names the limit; the
    statement stays usable."""
    from serving.flight_sql.server import MAX_PARAMETER_BYTES, MAX_PARAMETER_SETS

    client, options = raw_client(satchel_flight)
    prepared = prepare_raw(client, options, "select city from trips where id = ?")
    cmd = descriptor(pb.CommandPreparedStatementQuery(prepared_statement_handle=prepared.prepared_statement_handle))
    for batch in (pa.record_batch({"p": pa.array(range(MAX_PARAMETER_SETS + 1), pa.int64())}),
                  pa.record_batch({"p": pa.array(["x" * (1 << 20)] * (MAX_PARAMETER_BYTES >> 20), pa.string())})):
        writer, _ = client.do_put(cmd, batch.schema, options)
        with pytest.raises(pa.ArrowInvalid, match="payload_too_large: too many bound parameters: at most 10,000") as error:
            writer.write_batch(batch)
            writer.done_writing()
            writer.close()
        assert "Traceback" not in str(error.value) and ".py" not in str(error.value)
    with adbc_connect(satchel_flight) as conn, conn.cursor() as cur:
        cur.execute("select id from trips where id = ?", pa.record_batch({"id": pa.array(range(1, 101), pa.int64())}))
        assert len(cur.fetchall()) == 100  # every set ran


def test_flightsql_dbapi_queries(satchel_flight):
    endpoint = satchel_flight
    conn = connect(sql_client(endpoint))
    cur = conn.cursor()
    cur.execute("select id, city from trips where id < 3 order by id")
    assert cur.fetchall() == [[1, "oslo"], [2, "lima"]]
    cur.execute("select id, city from trips where id = ?", [3])  # dense-union parameters
    assert cur.fetchall() == [[3, "paris"]]
    cur.execute(
        "select distinct task, protocol from runtime.task_history "
        "where task = 'refresh' and error is null"
    )
    assert cur.fetchall() == [["refresh", "internal"]]  # the initial load of trips


def test_prepared_statement_result_carries_schemas(satchel_flight):
    client, options = raw_client(satchel_flight)
    result = prepare_raw(client, options, "select id, city from trips where id = ? and city = ?")
    dataset = pa.ipc.read_schema(pa.py_buffer(result.dataset_schema))
    params = pa.ipc.read_schema(pa.py_buffer(result.parameter_schema))
    assert dataset.names == ["id", "city"]
    assert len(params) == 2 and all(f.type == pa.null() for f in params)


def test_doput_answers_with_the_prepared_statement_handle(satchel_flight):
    client, options = raw_client(satchel_flight)
    prepared = prepare_raw(client, options, "select city from trips where id = ?")
    cmd = descriptor(
        pb.CommandPreparedStatementQuery(
            prepared_statement_handle=prepared.prepared_statement_handle
        )
    )
    params = pa.record_batch({"p": pa.array([9], pa.int64())})
    writer, metadata_reader = client.do_put(cmd, params.schema, options)
    writer.write_batch(params)
    writer.done_writing()
    answer = pb.DoPutPreparedStatementResult()
    answer.ParseFromString(metadata_reader.read().to_pybytes())
    writer.close()
    assert answer.prepared_statement_handle == prepared.prepared_statement_handle
    table = client.do_get(
        client.get_flight_info(cmd, options).endpoints[0].ticket, options
    ).read_all()
    assert table.to_pylist() == [{"city": "paris"}]


def test_wrong_number_of_parameters_is_invalid_argument(satchel_flight):
    client, options = raw_client(satchel_flight)
    prepared = prepare_raw(client, options, "select city from trips where id = ?")
    cmd = descriptor(
        pb.CommandPreparedStatementQuery(
            prepared_statement_handle=prepared.prepared_statement_handle
        )
    )
    params = pa.record_batch({"a": pa.array([1]), "b": pa.array([2])})
    writer, _ = client.do_put(cmd, params.schema, options)
    writer.write_batch(params)
    with pytest.raises(pa.ArrowInvalid, match="1 parameter"):
        writer.close()


# ---------------------------------------------------------------------- metadata


def test_adbc_metadata_calls(satchel_flight):
    endpoint = satchel_flight
    with adbc_connect(endpoint) as conn:
        assert conn.adbc_get_table_types() == ["TABLE", "VIEW"]
        schema = conn.adbc_get_table_schema("trips")
        assert schema.names == ["id", "city", "fare", "started_at"]
        assert schema.field("id").metadata[b"ARROW:FLIGHT:SQL:TYPE_NAME"] == b"bigint"
        assert (
            conn.adbc_get_table_schema("task_history", db_schema_filter="runtime").names
            == TASK_HISTORY_SCHEMA.names
        )
        got = conn.adbc_get_info()
        assert got["vendor_name"] == "Satchel"
        assert got["vendor_arrow_version"] == pa.__version__
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        assert [c["catalog_name"] for c in objects] == ["spice"]
        schemas = {
            s["db_schema_name"]: [t["table_name"] for t in s["db_schema_tables"]]
            for s in objects[0]["catalog_db_schemas"]
        }
        assert schemas == {
            "public": ["cities", "trip_cities", "trips"],
            "runtime": ["task_history"],
        }
        views = (
            conn.adbc_get_objects(depth="tables", table_types_filter=["VIEW"])
            .read_all()
            .to_pylist()
        )
        tables = [
            t["table_name"]
            for s in views[0]["catalog_db_schemas"]
            for t in s["db_schema_tables"] or []
        ]
        assert tables == ["trip_cities"]
        columns = (
            conn.adbc_get_objects(depth="all", table_name_filter="cit%").read_all().to_pylist()
        )
        [public] = [s for s in columns[0]["catalog_db_schemas"] if s["db_schema_tables"]]
        [cities] = public["db_schema_tables"]
        assert [c["column_name"] for c in cities["table_columns"]] == ["name", "country"]


def test_flightsql_dbapi_metadata(satchel_flight):
    conn = connect(sql_client(satchel_flight))
    assert conn.flightsql_get_schema_names() == ["public", "runtime"]
    assert conn.flightsql_get_table_names(schema="runtime") == ["task_history"]
    assert [c["name"] for c in conn.flightsql_get_columns("trips")] == [
        "id",
        "city",
        "fare",
        "started_at",
    ]
    keys = conn.flightsql_get_primary_keys("trips")
    assert [(k["table_name"], k["column_name"], k["key_sequence"]) for k in keys] == [
        ("trips", "id", 1)
    ]
    assert conn.flightsql_get_foreign_keys("trips") == []
    values = conn.flightsql_get_sql_info([0, 3, 504])
    assert values == {0: "Satchel", 3: True, 504: '"'}


def test_get_tables_filters_and_schemas(satchel_flight):
    client = sql_client(satchel_flight)
    table = fetch(
        client,
        client.get_tables(table_name_filter_pattern="trip%", db_schema_filter_pattern="pub%"),
    )
    assert table.column("table_name").to_pylist() == ["trip_cities", "trips"]
    assert table.schema == catalog.TABLES_SCHEMA
    only_views = fetch(client, client.get_tables(table_types=["VIEW"]))
    assert only_views.column("table_name").to_pylist() == ["trip_cities"]
    none = fetch(client, client.get_tables(catalog="elsewhere"))
    assert none.num_rows == 0
    with_schema = fetch(
        client, client.get_tables(include_schema=True, table_name_filter_pattern="cities")
    )
    assert with_schema.schema == catalog.TABLES_WITH_SCHEMA_SCHEMA
    decoded = pa.ipc.read_schema(pa.py_buffer(with_schema.column("table_schema")[0].as_py()))
    assert decoded.names == ["name", "country"]
    underscore = fetch(client, client.get_tables(table_name_filter_pattern="task\\_history"))
    assert underscore.column("table_name").to_pylist() == ["task_history"]


def test_catalogs_and_db_schemas(satchel_flight):
    client = sql_client(satchel_flight)
    assert fetch(client, client.get_catalogs()).to_pylist() == [{"catalog_name": "spice"}]
    runtime_only = fetch(client, client.get_db_schemas(db_schema_filter_pattern="r%"))
    assert runtime_only.to_pylist() == [{"catalog_name": "spice", "db_schema_name": "runtime"}]
    assert fetch(client, client.get_db_schemas(catalog="nope")).num_rows == 0
    assert fetch(client, client.get_table_types()).column(0).to_pylist() == ["TABLE", "VIEW"]


def test_sql_info_uses_the_dense_union_layout(satchel_flight):
    client = sql_client(satchel_flight)
    table = fetch(client, client.get_sql_info([]))
    assert table.schema == info.SQL_INFO_SCHEMA
    value_type = table.schema.field("value").type
    assert value_type.mode == "dense" and value_type.type_codes == [0, 1, 2, 3, 4, 5]
    values = dict(zip(table.column("info_name").to_pylist(), table.column("value").to_pylist()))
    S = pb.SqlInfo.Value
    assert values[S("FLIGHT_SQL_SERVER_NAME")] == "Satchel"
    assert values[S("FLIGHT_SQL_SERVER_READ_ONLY")] is True
    assert values[S("SQL_IDENTIFIER_QUOTE_CHAR")] == '"'
    assert values[S("FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT")] == 600_000
    assert "ilike" in values[S("SQL_KEYWORDS")]
    assert dict(values[S("SQL_SUPPORTS_CONVERT")])[19]  # varchar converts to other types
    codes = table.column("value").chunk(0).type_codes.to_pylist()
    kinds = dict(zip(table.column("info_name").to_pylist(), codes))
    assert kinds[S("FLIGHT_SQL_SERVER_TRANSACTION")] == 3  # int32 slot
    assert kinds[S("SQL_MAX_COLUMN_NAME_LENGTH")] == 2  # bigint slot
    filtered = fetch(client, client.get_sql_info([S("FLIGHT_SQL_SERVER_NAME"), 9999]))
    assert filtered.column("info_name").to_pylist() == [0]


def test_xdbc_type_info(satchel_flight):
    client = sql_client(satchel_flight)
    every = fetch(client, client.get_xdbc_type_info(None))
    assert every.schema == info.XDBC_TYPE_INFO_SCHEMA
    data_types = every.column("data_type").to_pylist()
    assert data_types == sorted(data_types)
    integer = fetch(client, client.get_xdbc_type_info(4))
    assert integer.column("type_name").to_pylist() == ["integer"]


def test_foreign_key_commands_are_empty_with_the_protocol_schema(satchel_flight):
    client = sql_client(satchel_flight)
    ref = TableRef(catalog="spice", db_schema="public", table="trips")
    for flight_info in (
        client.get_exported_keys(ref),
        client.get_imported_keys(ref),
        client.get_cross_reference(ref, TableRef(table="cities")),
    ):
        table = fetch(client, flight_info)
        assert table.num_rows == 0 and table.schema == catalog.FOREIGN_KEYS_SCHEMA


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("server", "sql", "adbc_status", "grpc_name"),
    [
        ("satchel_flight", "select * from no_such_table", AdbcStatusCode.NOT_FOUND, "NotFound"),
        ("satchel_flight", "selec 1", AdbcStatusCode.INVALID_ARGUMENT, "InvalidArgument"),
        (
            "satchel_flight",
            "insert into cities values ('x', 'y')",
            AdbcStatusCode.UNAUTHORIZED,
            "PermissionDenied",
        ),
        # cities never finishes its first load (ready_state: on_load, missing file)
        ("satchel_flight_not_ready", "select * from cities", AdbcStatusCode.IO, "Unavailable"),
    ],
)
def test_errors_carry_the_right_grpc_status(request, server, sql, adbc_status, grpc_name):
    endpoint = request.getfixturevalue(server)
    with adbc_connect(endpoint) as conn, conn.cursor() as cur, pytest.raises(adbc.Error) as caught:
        cur.execute(sql)
    assert caught.value.status_code == adbc_status
    assert f"({grpc_name};" in str(caught.value)


def test_writes_are_refused(satchel_flight):
    endpoint = satchel_flight
    client = sql_client(endpoint)
    with pytest.raises(flight.FlightUnauthorizedError, match="read-only"):
        client.execute_update("delete from trips")
    with adbc_connect(endpoint) as conn, conn.cursor() as cur, pytest.raises(adbc.Error) as caught:
        cur.adbc_ingest("trips", pa.table({"id": [1]}), mode="append")
    assert caught.value.status_code == AdbcStatusCode.UNAUTHORIZED
    assert "read-only" in str(caught.value)


def test_unsupported_protocol_features_are_unimplemented(satchel_flight):
    client, options = raw_client(satchel_flight)
    with pytest.raises(pa.ArrowNotImplementedError, match="transactions"):
        client.get_flight_info(
            descriptor(pb.CommandStatementQuery(query="select 1", transaction_id=b"t")), options
        )
    with pytest.raises(pa.ArrowNotImplementedError, match="Substrait"):
        client.get_flight_info(
            descriptor(pb.CommandStatementSubstraitPlan(plan=pb.SubstraitPlan(plan=b"x"))), options
        )
    with pytest.raises(pa.ArrowNotImplementedError, match="transactions"):
        list(client.do_action(flight.Action("BeginTransaction", b""), options))
    with pytest.raises(pa.ArrowInvalid, match="path descriptors"):
        client.get_flight_info(flight.FlightDescriptor.for_path("trips"), options)
    with pytest.raises(pa.ArrowInvalid, match="malformed"):
        client.get_flight_info(
            flight.FlightDescriptor.for_command(b"\xff\xff not protobuf"), options
        )


# ---------------------------------------------------------------------- auth


def test_auth_requires_the_bearer_key_on_every_call(satchel_flight_auth):
    endpoint = satchel_flight_auth
    with adbc_connect(endpoint) as conn, conn.cursor() as cur:
        cur.execute("select 1 as x")
        assert cur.fetchall() == [(1,)]
    for header in (None, "Bearer wrong", "Token k-123"):
        kwargs = (
            {DatabaseOptions.AUTHORIZATION_HEADER.value: header}
            if header
            else {"adbc.flight.sql.rpc.call_header.x-other": "1"}
        )
        with adbc_connect(endpoint, **kwargs) as conn, conn.cursor() as cur:
            with pytest.raises(adbc.Error) as caught:
                cur.execute("select 1 as x")
            assert caught.value.status_code == AdbcStatusCode.UNAUTHENTICATED
    client, _ = raw_client(endpoint)
    with pytest.raises(flight.FlightUnauthenticatedError, match="missing API key"):
        client.get_flight_info(descriptor(pb.CommandGetCatalogs()))


def test_auth_basic_handshake_exchanges_the_key_for_a_bearer_token(satchel_flight_auth):
    endpoint = satchel_flight_auth
    with adbc_connect(endpoint, username="agent", password="k-123") as conn, conn.cursor() as cur:
        cur.execute("select 2 as x")
        assert cur.fetchall() == [(2,)]
    with pytest.raises(adbc.Error) as caught:
        with (
            adbc_connect(endpoint, username="agent", password="nope") as conn,
            conn.cursor() as cur,
        ):
            cur.execute("select 2 as x")
    assert caught.value.status_code == AdbcStatusCode.UNAUTHENTICATED
    cur = connect(sql_client(endpoint, user="agent", password="k-123")).cursor()
    cur.execute("select 3 as x")
    assert cur.fetchall() == [[3]]
    raw = flight.connect(endpoint.uri)
    assert raw.authenticate_basic_token("agent", "k-123") == (b"authorization", b"Bearer k-123")
    with pytest.raises(flight.FlightUnauthenticatedError):
        raw.authenticate_basic_token("agent", "wrong")


def test_without_auth_credentials_are_ignored(satchel_flight):
    endpoint = satchel_flight
    with adbc_connect(
        endpoint, **{DatabaseOptions.AUTHORIZATION_HEADER.value: "Bearer anything"}
    ) as conn:
        with conn.cursor() as cur:
            cur.execute("select 1 as x")
            assert cur.fetchall() == [(1,)]
    with adbc_connect(endpoint, username="u", password="p") as conn, conn.cursor() as cur:
        cur.execute("select 1 as x")
        assert cur.fetchall() == [(1,)]


# ---------------------------------------------------------------------- TLS


def test_tls_with_a_trusted_certificate(satchel_flight_tls):
    endpoint = satchel_flight_tls
    assert endpoint.uri.startswith("grpc+tls://")
    with adbc_connect(endpoint) as conn, conn.cursor() as cur:
        cur.execute("select 'secure' as s")
        assert cur.fetchall() == [("secure",)]
    cur = connect(sql_client(endpoint)).cursor()
    cur.execute("select 1 as x")
    assert cur.fetchall() == [[1]]
    untrusted = {DatabaseOptions.AUTHORIZATION_HEADER.value: "Bearer k-tls"}
    with (
        adbc.connect(endpoint.uri, db_kwargs=untrusted, autocommit=True) as conn,
        conn.cursor() as cur,
    ):
        with pytest.raises(adbc.Error, match="certificate"):
            cur.execute("select 1 as x")


# ---------------------------------------------------------------------- handles


def test_statement_tickets_are_single_use(satchel_flight):
    client, options = raw_client(satchel_flight)
    flight_info = client.get_flight_info(
        descriptor(pb.CommandStatementQuery(query="select 1 as x")), options
    )
    ticket = flight_info.endpoints[0].ticket
    assert client.do_get(ticket, options).read_all().num_rows == 1
    with pytest.raises(pa.ArrowKeyError):
        client.do_get(ticket, options).read_all()


# ---------------------------------------------------------------------- error details


def test_error_details_carry_no_engine_traceback(satchel_flight):
    client, options = raw_client(satchel_flight)
    with pytest.raises(pa.ArrowInvalid) as caught:
        client.get_flight_info(descriptor(pb.CommandStatementQuery(query="selec 1")), options)
    text = str(caught.value)
    assert "syntax error" in text
    assert "During handling" not in text
    for engine_file in ("runtime.py", "sql_policy.py", "planner.py", "sqlglot"):
        assert engine_file not in text


# ---------------------------------------------------------------------- test double
# These look inside the server (open handle counts, handle TTL and bound, whether the runtime
# ran a query, injected runtime failures, constructor errors), so they run against the
# in-process server over the runtime TEST DOUBLE.


def test_prepared_statements_are_released_on_close(double_endpoint):
    with adbc_connect(double_endpoint) as conn:
        cur = conn.cursor()
        cur.execute("select 1 as one")
        cur.fetchall()
        assert double_endpoint.server.open_handles["prepared_statements"] == 1
        cur.close()
    assert double_endpoint.server.open_handles == {"statement_tickets": 0, "prepared_statements": 0}


def test_get_schema_answers_without_running(double_endpoint):
    client, options = raw_client(double_endpoint)
    schema = client.get_schema(
        descriptor(pb.CommandStatementQuery(query="select city from trips")), options
    ).schema
    assert schema.names == ["city"]
    assert (
        client.get_schema(descriptor(pb.CommandGetCatalogs()), options).schema
        == catalog.CATALOGS_SCHEMA
    )
    assert double_endpoint.runtime.queries == []


def test_error_raised_mid_stream_keeps_its_status(double_endpoint):
    with adbc_connect(double_endpoint) as conn, conn.cursor() as cur, pytest.raises(adbc.Error) as caught:
        cur.execute("select n from flaky")
        cur.fetchall()
    assert caught.value.status_code == AdbcStatusCode.TIMEOUT
    assert "time limit" in str(caught.value)

    client, options = raw_client(double_endpoint)
    info_ = client.get_flight_info(descriptor(pb.CommandStatementQuery(query="select n from flaky")), options)
    reader = client.do_get(info_.endpoints[0].ticket, options)
    received = []
    with pytest.raises(flight.FlightTimedOutError, match="time limit"):
        for chunk in reader:
            received.append(chunk.data.num_rows)
    assert received == [1, 1, 1]  # the error came after the rows, on the open stream


def test_small_results_are_read_whole_before_they_are_sent():
    schema = pa.schema([pa.field("n", pa.int64(), nullable=False)])
    one = pa.record_batch([pa.array([1, 2])], names=["n"])  # nullable: cast to the announced schema

    head, whole = _head(pa.RecordBatchReader.from_batches(one.schema, [one]), schema)
    assert whole and [b.schema for b in head] == [schema] and head[0].column(0).to_pylist() == [1, 2]

    many = pa.RecordBatchReader.from_batches(one.schema, [one] * 5)
    head, whole = _head(many, schema)
    assert not whole and len(head) == 2
    streamed = list(_batches(many, [], schema, head=head))
    assert [b.column(0).to_pylist() for b in streamed] == [[1, 2]] * 5

    def failing():
        yield one
        raise QueryTimeout("query exceeded its time limit")

    with pytest.raises(QueryTimeout):  # raised in the handler, which maps it to its status
        _head(pa.RecordBatchReader.from_batches(one.schema, failing()), schema)


def test_internal_errors_do_not_leak_their_message(double_endpoint, monkeypatch):
    def boom(sql, principal):
        raise RuntimeError("connection string password=hunter2")

    monkeypatch.setattr(double_endpoint.runtime, "query_schema", boom)
    client, options = raw_client(double_endpoint)
    with pytest.raises(flight.FlightInternalError) as caught:
        client.get_flight_info(descriptor(pb.CommandStatementQuery(query="select 1")), options)
    assert "hunter2" not in str(caught.value) and "RuntimeError" not in str(caught.value)
    assert "internal_error: internal error in Flight SQL GetFlightInfo; see the server log" in str(caught.value)


def test_unfetched_handles_expire(start_double_flight):
    endpoint = start_double_flight(handle_ttl_seconds=0.5)
    client, options = raw_client(endpoint)
    flight_info = client.get_flight_info(
        descriptor(pb.CommandStatementQuery(query="select 1 as x")), options
    )
    with adbc_connect(endpoint) as conn, conn.cursor() as cur:
        cur.adbc_prepare("select 2 as y")
        time.sleep(0.8)
        with pytest.raises(adbc.Error) as caught:
            cur.execute("select 2 as y")  # reuses the (now expired) prepared statement
        assert caught.value.status_code == AdbcStatusCode.NOT_FOUND
        assert "expired" in str(caught.value)
    with pytest.raises(pa.ArrowKeyError, match="expired"):
        client.do_get(flight_info.endpoints[0].ticket, options).read_all()
    assert endpoint.server.open_handles == {"statement_tickets": 0, "prepared_statements": 0}


def test_handle_count_is_bounded(start_double_flight):
    endpoint = start_double_flight(max_handles=2)
    client, options = raw_client(endpoint)
    handles = [
        prepare_raw(client, options, f"select {i} as x").prepared_statement_handle for i in range(3)
    ]
    assert endpoint.server.open_handles["prepared_statements"] == 2
    oldest = descriptor(pb.CommandPreparedStatementQuery(prepared_statement_handle=handles[0]))
    with pytest.raises(pa.ArrowKeyError):
        client.get_flight_info(oldest, options)
    newest = descriptor(pb.CommandPreparedStatementQuery(prepared_statement_handle=handles[2]))
    assert client.get_flight_info(newest, options).schema.names == ["x"]


def test_concurrent_clients(double_endpoint):
    from concurrent.futures import ThreadPoolExecutor

    def work(n: int) -> list[tuple]:
        with adbc_connect(double_endpoint) as conn, conn.cursor() as cur:
            out = []
            for i in range(5):
                cur.execute("select count(*) from trips where id <= ?", (n * 10 + i,))
                out.append(cur.fetchone())
            return out

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(1, 5)))
    assert results == [[(n * 10 + i,) for i in range(5)] for n in range(1, 5)]
    assert double_endpoint.server.open_handles == {"statement_tickets": 0, "prepared_statements": 0}


def test_tls_configuration_errors(tls_files):
    from engine.errors import ConfigError
    from serving.flight_sql.server import SatchelFlightSqlServer

    runtime = object()
    with pytest.raises(ConfigError, match="both a certificate file and a key file"):
        SatchelFlightSqlServer(
            runtime, "grpc://127.0.0.1:0", tls_cert_file=str(tls_files.cert_file)
        )
    with pytest.raises(ConfigError, match="cannot read Flight TLS file"):
        SatchelFlightSqlServer(
            runtime, "grpc://127.0.0.1:0", tls_cert_file="/nonexistent.crt", tls_key_file="/x.key"
        )
    with pytest.raises(ConfigError, match="unsupported Flight location scheme"):
        SatchelFlightSqlServer(runtime, "http://127.0.0.1:0")
