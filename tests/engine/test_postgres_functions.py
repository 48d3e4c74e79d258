"""Which PostgreSQL functions a whole query may carry down to PostgreSQL when the federated
engine cannot plan it (engine.query.postgres_functions): side-effect-free functions of their
arguments go; what reads other tables, the catalog, settings, files, sessions, locks or
sequences, sleeps, or tells about the server does not."""

from __future__ import annotations

import pytest

from engine.query.postgres_functions import refused_function


@pytest.mark.parametrize("sql", [
    "SELECT mode() WITHIN GROUP (ORDER BY t.a) FROM public.t AS t",
    "SELECT json_build_object('a', t.a), jsonb_agg(t.b), to_json(t.s)::text FROM public.t AS t",
    "SELECT make_interval(days => t.a), justify_hours(t.i), quote_ident(t.s), num_nulls(t.a, t.b) FROM public.t AS t",
    "SELECT t.payload ->> 'name', jsonb_array_length(t.payload -> 'arr') FROM public.t AS t",
    "SELECT t.id, x.m FROM public.t AS t LEFT JOIN LATERAL (SELECT max(u.a) AS m FROM public.t AS u) AS x ON true",
    "SELECT CAST(t.a AS NUMERIC(10, 2)), t.b::text, t.c::jsonb, t.d::uuid, CAST(t.e AS INTERVAL) FROM public.t AS t",
])
def test_side_effect_free_functions_may_go(sql: str) -> None:
    assert refused_function(sql) is None


@pytest.mark.parametrize("sql,refused", [
    ("SELECT pg_sleep(10) FROM public.t", "pg_sleep"),
    ("SELECT pg_catalog.pg_sleep(10)", "pg_sleep"),
    ("SELECT \"pg_sleep\"(10)", "pg_sleep"),
    ("SELECT query_to_xml('SELECT * FROM secrets', true, true, '')", "query_to_xml"),
    ("SELECT t.a FROM public.t AS t WHERE pg_advisory_lock(1) IS NOT NULL", "pg_advisory_lock"),
    ("SELECT txid_current()", "txid_current"),
    ("SELECT dblink('host=x', 'SELECT 1')", "dblink"),
    ("SELECT lo_get(1)", "lo_get"),
    ("SELECT version()", "CurrentVersion"),
    ("SELECT current_database()", "CurrentDatabase"),
    ("SELECT current_user", "CurrentUser"),
    ("SELECT user", "user"),
    ("SELECT 'pg_authid'::regclass", "a cast to REGCLASS"),
    ("SELECT CAST('1/0' AS pg_lsn)", "a cast to pg_lsn"),
    ("SELECT (((", "a statement sqlglot cannot read back"),
])
def test_everything_else_stays_out(sql: str, refused: str) -> None:
    assert refused_function(sql) == refused
