"""Whole-query push-down to one SQL source: PostgreSQL, another Satchel, a DataFusion server.

When every table of a federated plan is a live (not accelerated) dataset of one SQL source --
connectors with a `query(sql)` method and the same `source_id` (connection identity without
secrets) -- the whole query (joins, aggregates, windows, ORDER BY/LIMIT, subqueries) runs
in the source, in its dialect, instead of in DataFusion over pushed-down scans.

A connector states it by being a `WholeQuerySql` (connectors/base.py):
- `sql_dialect`: "postgres", "satchel" (another Satchel: our public dialect with the
  same semantics: everything goes down), "datafusion" (roapi and other DataFusion servers:
  the planner's DataFusion-ready SQL, only when every node is in a conservative set whose
  meaning DataFusion shares, and no float column is used, see `_DATAFUSION_NODES`) or
  "spark" (Sail and other Spark SQL servers: the same set without division, which is
  fractional for integers there, arithmetic only on BIGINT/DECIMAL (narrower integers wrap
  on overflow in Spark), no casts to float or text; written by sqlglot's "spark" dialect:
  backticks, backslash-escaped strings, NULLS FIRST/LAST spelled out); other dialects never
  get whole queries;
- `relation_sql`: the FROM item replacing the table (a quoted name or `(query) AS q`);
  PostgreSQL connectors say None and give `schema_name` / `table_name` instead;
- `source_id` and `pushdown_safe(columns)`.

The meaning must stay the one the other routes give, so the query is the planner's typed,
DataFusion-ready tree (AVG and division of decimals already in DOUBLE, EXTRACT as BIGINT, ...),
rendered in the source's dialect, and only sent when nothing in it can mean something else
there. For PostgreSQL:

- every table is on one server, whose connector says `pushdown_safe()` for the columns used
  (code point string order: database collation C / C.UTF-8 / POSIX and no column collation;
  no char(n), whose trailing blanks compare differently; no columns served via a text cast);
- no round() of a float the planner has not made PostgreSQL's (half to even) and no float
  turned into text;
- integer division, NULL ordering (NULLS LAST ascending, FIRST descending) and session time
  zone (UTC on every Satchel connection) are already PostgreSQL's in the public dialect;
- the result is cast to the exact schema DataFusion would return for the same plan (found by
  planning it over empty tables), so the answer has the same types on every route.

If the source rejects the statement, the plan runs federated as before.
"""

from __future__ import annotations

import logging
import re
from typing import Iterator, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types

from connectors.base import DescribedStatement, DescribesStatements, HasJsonColumns, ScanSql, WholeQuerySql

from ..errors import Overloaded
from .arrow_cast import cast_type_of
from .pg_semantics import average_of
from .planner import Plan, typing_schema
from .postgres_functions import refused_function, source_fact
from .sql_policy import PUBLIC_DIALECT

log = logging.getLogger("satchel.pushdown")


def _connectors(plan: Plan, datasets: Mapping[str, object]) -> list | None:
    """The connectors of a plan that may go down whole, or None."""
    if plan.route != "federated" or not plan.scans or plan.full_text:  # match() is in the scans, not plan.sql
        return None
    if any(s.binding.kind != "source" or not s.binding.dataset for s in plan.scans):
        return None
    conns = []
    for s in plan.scans:
        ds = datasets.get(s.binding.dataset.lower())
        conn = ds.connector if ds is not None else None
        if not isinstance(conn, WholeQuerySql) or not conn.source_id:
            return None
        if dialect_of(conn) not in _WHOLE_QUERY_DIALECTS or not _safe_columns(plan, s, conn):
            return None
        conns.append(conn)
    if len({c.source_id for c in conns}) != 1:
        return None
    return conns


_WHOLE_QUERY_DIALECTS = ("postgres", "satchel", "datafusion", "spark")


def _safe_columns(plan: Plan, scan, conn: WholeQuerySql) -> bool:
    """Whether the columns `scan` reads mean in the source what they mean here. A JSON column
    (served as its text) does when the query only reads into it with JSON operators and
    functions (`payload ->> 'name'`): PostgreSQL then works on the JSON value itself, which
    the federated engine cannot do at all."""
    if conn.pushdown_safe(scan.columns):
        return True
    json = conn.json_columns() if isinstance(conn, HasJsonColumns) else frozenset()
    used = scan.columns if scan.columns is not None else scan.binding.schema.names
    if not json.intersection(used):
        return False
    if "json_reads_only" not in plan.memo:
        plan.memo["json_reads_only"] = _json_reads_only(plan.sql)
    rest = [c for c in used if c not in json or c not in plan.memo["json_reads_only"]]
    return conn.pushdown_safe(rest)


_JSON_READS = (exp.JSONExtract, exp.JSONExtractScalar, exp.JSONBExtract, exp.JSONBExtractScalar,
               exp.ArrayContainsAll, exp.ArrayContainedBy, exp.JSONBContainsTopKey, exp.JSONBContainsAnyTopKeys,
               exp.JSONBContainsAllTopKeys)  # ->, ->>, #>, #>>, @>, <@, ?, ?|, ?&


def _json_reads_only(sql: str) -> frozenset[str]:
    """The names of the columns `sql` uses only as the JSON value a JSON operator or a json
    function reads, in an IS [NOT] NULL test, or as an output column of the outermost SELECT
    (its text is the same there: PostgreSQL writes jsonb as Satchel serves it) when that SELECT
    neither groups, deduplicates nor orders by position (jsonb compares as JSON: 1.0 = 1.00)."""
    try:
        tree = sqlglot.parse_one(sql, read=PUBLIC_DIALECT)
    except sqlglot.errors.ParseError:
        return frozenset()
    plain_outputs = isinstance(tree, exp.Select) and not tree.args.get("distinct") and not tree.args.get("group") \
        and not any(isinstance(o.this, exp.Literal) for o in (tree.args.get("order") or exp.Order()).expressions)
    reads: set[str] = set()
    other: set[str] = set()
    for column in tree.find_all(exp.Column):
        parent = column.parent
        json_read = isinstance(parent, _JSON_READS) and column.arg_key == "this" or isinstance(parent, exp.Anonymous) \
            and parent.name.lower().startswith(("json_", "jsonb_")) and column.arg_key == "expressions" \
            or isinstance(parent, exp.Is) or plain_outputs and (parent is tree or isinstance(parent, exp.Alias)
                                                               and parent.parent is tree)
        (reads if json_read else other).add(column.name)
    return frozenset(reads - other)


def dialect_of(conn: WholeQuerySql) -> str:
    """The connector's SQL dialect ("unknown" when it cannot be found out)."""
    try:
        return conn.sql_dialect or "unknown"
    except Exception:  # noqa: BLE001 - a dialect that cannot be found out (unreachable server)
        return "unknown"


def source_sql(plan: Plan, datasets: Mapping[str, object]) -> str | None:
    """The statement the whole plan would run in its source, or None when it may not go down
    (or need not: a plain scan is the connector's own scan statement, streamed as it comes)."""
    if plan.plain_scan is not None:
        return None
    try:
        conns = _connectors(plan, datasets)
    except Exception as e:  # noqa: BLE001 - a source that cannot say (unreachable): scans decide
        log.info("whole-query push-down not possible: %s", e)
        return None
    if conns is None:
        return None
    memo = plan.memo.get("source_sql")  # (connectors, statement): rendering costs milliseconds
    if memo is not None and len(memo[0]) == len(conns) and all(a is b for a, b in zip(memo[0], conns)):
        return memo[1]
    sql = _render(plan, conns)
    plan.memo["source_sql"] = (tuple(conns), sql)
    return sql


def _render(plan: Plan, conns: list) -> str | None:
    """The whole plan as one statement of its source's dialect, or None when it could mean
    something else there."""
    relations = {s.register_as: c for s, c in zip(plan.scans, conns)}
    try:
        tree = sqlglot.parse_one(plan.sql, read=PUBLIC_DIALECT)
    except sqlglot.errors.ParseError:
        return None
    dialect = dialect_of(conns[0])
    if dialect == "postgres":
        typed = _typed(tree, plan)
        if typed is None or _different_meaning(typed) or source_fact(typed) is not None \
                or not _postgres_forms(typed):  # it could: stay here
            return None
        tree = _exact_averages(typed)
    if dialect == "datafusion" and not _datafusion_same_meaning(tree):
        return None
    if dialect == "spark" and not _spark_same_meaning(tree, plan):
        return None
    placeholders: dict[str, str] = {}
    for table in list(tree.find_all(exp.Table)):
        conn = relations.get(table.name)
        if conn is None:
            continue
        relation = conn.relation_sql
        if relation is None:  # PostgreSQL: a schema-qualified table
            table.set("this", exp.to_identifier(conn.table_name, quoted=True))
            table.set("db", exp.to_identifier(conn.schema_name, quoted=True))
            continue
        # The relation (a table or a parenthesised query) is the source's own text: put in
        # after rendering, in place of a unique name, so sqlglot never rewrites it.
        mark = f"__satchel_relation_{len(placeholders)}__"
        placeholders[mark] = relation
        if not table.alias:
            table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name, quoted=True)))
        table.set("this", exp.to_identifier(mark, quoted=True))
        table.set("db", None)
        table.set("catalog", None)
    text = tree.sql("spark" if dialect == "spark" else PUBLIC_DIALECT)  # (PostgreSQL's, with all of to_char's patterns)
    quote = "`" if dialect == "spark" else '"'
    for mark, relation in placeholders.items():
        alias = f" AS {quote}q{quote}"
        if relation.startswith("(") and relation.endswith(")" + alias):
            relation = relation[: -len(alias)]
        text = text.replace(f"{quote}{mark}{quote}", relation)
    return "/* satchel */ " + text


# What a DataFusion server evaluates as the engine's own DataFusion does, whatever its version:
# plain relational shapes, comparisons, integer/decimal arithmetic (integer division truncates
# there too), CASE, NULL tests and the standard aggregates. Anything else (functions whose
# names or semantics drift between versions, LIKE, casts to text, windows) stays local.
_DATAFUSION_NODES = (
    exp.Select, exp.From, exp.Join, exp.Where, exp.Group, exp.Having, exp.Order, exp.Ordered, exp.Limit,
    exp.Offset, exp.Column, exp.Identifier, exp.Table, exp.TableAlias, exp.Alias, exp.Literal, exp.Boolean,
    exp.Null, exp.Paren, exp.And, exp.Or, exp.Not, exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE, exp.Is,
    exp.In, exp.Between, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Neg, exp.Count, exp.Sum, exp.Min, exp.Max,
    exp.Avg, exp.Star, exp.Distinct, exp.Subquery, exp.With, exp.CTE, exp.Case, exp.If, exp.Cast,
    exp.DataType, exp.DataTypeParam, exp.Var,
)


def _datafusion_same_meaning(tree: exp.Expression) -> bool:
    for node in tree.walk():
        if not isinstance(node, _DATAFUSION_NODES):
            return False
        if isinstance(node, exp.Cast) and not (node.to.is_type(*exp.DataType.NUMERIC_TYPES)
                                               or node.to.is_type(*exp.DataType.TEMPORAL_TYPES)):
            return False
    return True


# Spark SQL (Sail): the DataFusion set but division (`/` is fractional for integers in Spark).
_SPARK_NODES = tuple(n for n in _DATAFUSION_NODES if n is not exp.Div)
_SPARK_WIDE = {exp.DataType.Type.BIGINT, exp.DataType.Type.DECIMAL}


def _spark_same_meaning(tree: exp.Expression, plan: Plan) -> bool:
    """Whether a Spark SQL server (Sail) gives this query the engine's answer: nodes of the
    conservative set, arithmetic only on BIGINT/DECIMAL (narrower integers wrap around in
    Spark instead of failing), casts only to integers, decimals and dates."""
    for node in tree.walk():
        if not isinstance(node, _SPARK_NODES):
            return False
        if isinstance(node, exp.Cast) and not (node.to.is_type(*exp.DataType.INTEGER_TYPES)
                                               or node.to.is_type(exp.DataType.Type.DECIMAL, exp.DataType.Type.DATE)):
            return False
    def arithmetic(node: exp.Expression) -> bool:  # a negative literal (-1) is not
        return isinstance(node, (exp.Add, exp.Sub, exp.Mul)) or isinstance(node, exp.Neg) \
            and not isinstance(node.this, exp.Literal)

    if not any(arithmetic(n) for n in tree.walk()):
        return True
    narrow = (exp.DataType.Type.TINYINT, exp.DataType.Type.SMALLINT, exp.DataType.Type.INT)
    if any(isinstance(n, exp.Cast) and n.to.is_type(*narrow) and arithmetic(n.this.unnest()) for n in tree.walk()):
        return False  # the planner's overflow check (BIGINT arithmetic cast back): Spark's cast wraps around
    typed = _typed(tree, plan)
    if typed is None:
        return False
    return all(n.type is not None and n.type.this in _SPARK_WIDE for n in typed.walk() if arithmetic(n))


def _typed(tree: exp.Expression, plan: Plan) -> exp.Expression | None:
    """A copy of `tree` with sqlglot's types for the plan's scans (None: cannot tell)."""
    tables = {}
    for scan in plan.scans:
        names = scan.columns if scan.columns is not None else scan.binding.schema.names
        tables[scan.register_as] = pa.schema([scan.binding.schema.field(n) for n in names])
    try:
        return annotate_types(tree.copy(), schema=typing_schema(tables), dialect=PUBLIC_DIALECT)
    except Exception:  # noqa: BLE001
        return None


_FLOATS = {exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT}
_TEXTS = {exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR, exp.DataType.Type.CHAR}


def _different_meaning(typed: exp.Expression) -> bool:
    """Whether PostgreSQL could give this query (typed by `_typed`) another answer than the
    engines: round() of a float (PostgreSQL rounds half to even, the engines half away from
    zero) and floats turned into text (each engine formats them its own way)."""
    def is_float(node: exp.Expression) -> bool:
        return node.type is not None and node.type.this in _FLOATS

    for node in typed.walk():
        if isinstance(node, exp.Round) and is_float(node.this) and node.find_ancestor(exp.Case) is None:
            return True  # (the planner's float->int cast builds its own exact CASE around round)
        if isinstance(node, exp.Cast) and node.to.this in _TEXTS and is_float(node.this):
            return True
        if isinstance(node, exp.DPipe) and any(is_float(x) for x in (node.this, node.expression)):
            return True
    return False


# The Arrow types the planner casts to with DataFusion's arrow_cast, as PostgreSQL's types


def _postgres_forms(typed: exp.Expression) -> bool:
    """Write the DataFusion-only calls the planner made in PostgreSQL's words, in place:
    `arrow_cast` as CAST, `to_local_time(x AT TIME ZONE z)` as `x AT TIME ZONE z` (already the
    wall-clock time there), `date_format` (DataFusion's to_char, with strftime's format) as
    PostgreSQL's to_char, `array_element(a, i)` as `(a)[i]`. False when one has no PostgreSQL form of the same
    meaning (`date_format` with DataFusion's fractions, durations, `signum`, `arrow_typeof`): PostgreSQL
    would fail on it, or worse, read `%Y` as text (to_char gave '2024-01-%2 23:30')."""
    for node in reversed(list(typed.find_all(exp.Anonymous))):  # innermost first
        name, args = node.name.lower(), node.expressions
        if name == "arrow_cast" and len(args) == 2 and args[1].is_string:
            to = cast_type_of(args[1].this)
            if to is None:
                return False
            node.replace(exp.Cast(this=args[0], to=to))
        elif name == "to_local_time" and len(args) == 1 and isinstance(args[0], exp.AtTimeZone):
            node.replace(args[0])
        elif name == "date_format" and len(args) == 2 and args[1].is_string and "%." not in args[1].this:
            node.replace(exp.TimeToStr(this=args[0], format=_letters_quoted(args[1])))  # written as to_char's
        elif name == "to_timestamp_micros" and len(args) == 2 and args[1].is_string:
            # strftime's format written as to_timestamp's; a wall-clock time as DataFusion's (the session is UTC)
            node.replace(exp.Cast(this=exp.StrToTime(this=args[0], format=_letters_quoted(args[1])),
                                  to=exp.DataType.build("TIMESTAMP")))
        elif name == "array_element" and len(args) == 2:  # (array)[i], counted from 1 in both
            node.replace(exp.Bracket(this=exp.Paren(this=args[0]), expressions=[args[1]], offset=1))
        elif name in ("date_format", "signum", "arrow_typeof", "to_local_time", "to_timestamp_micros"):
            return False
    return True


def _letters_quoted(strftime: exp.Literal) -> exp.Literal:
    """A strftime format whose literal letters are quoted, as PostgreSQL's formats need them:
    `%Y-%m-%dT%H` written as `YYYY-MM-DDTHH24` gave '2024-01-15THH24' (its TH is a suffix)."""
    def literal(text: str) -> str:  # letters quoted, a double quote escaped
        return _LETTERS.sub(r'"\g<0>"', text.replace('"', '\\"'))

    pieces = _STRFTIME_TOKEN.split(strftime.this)
    return exp.Literal.string("".join(
        ("%" if piece == "%%" else piece) if _STRFTIME_TOKEN.fullmatch(piece) else literal(piece) for piece in pieces))


_STRFTIME_TOKEN = re.compile(r"(%[-#]?.)")
_LETTERS = re.compile(r"[A-Za-z]+")


def _exact_averages(typed: exp.Expression) -> exp.Expression:
    """How the planner makes DataFusion's AVG(decimal) a DOUBLE, as DuckDB's is (`AVG(CAST(d AS
    DOUBLE))`, or the sum over the count, each cast), as `CAST(AVG(d) AS DOUBLE)`: the same type,
    the exact average rounded once, and PostgreSQL sums numerics much faster than it converts each
    one to float."""
    for node in list(typed.find_all(exp.Paren)):
        if (average := average_of(node)) is not None:
            node.replace(exp.Cast(this=average, to=exp.DataType.build("DOUBLE")))
    for node in list(typed.find_all(exp.Avg)):
        arg = node.this.expressions[0] if isinstance(node.this, exp.Distinct) else node.this
        if isinstance(arg, exp.Cast) and arg.to.this == exp.DataType.Type.DOUBLE and arg.this.type is not None \
                and arg.this.type.this == exp.DataType.Type.DECIMAL:
            arg.replace(arg.this)
            outer = node
            while isinstance(outer.parent, (exp.Filter, exp.Window)):  # AVG(...) FILTER (...) OVER (...)
                outer = outer.parent
            placeholder = exp.Null()
            outer.replace(placeholder)
            placeholder.replace(exp.Cast(this=outer, to=arg.to))
    return typed


def run(plan: Plan, datasets: Mapping[str, object]) -> pa.RecordBatchReader | None:
    """Run the whole plan in its source; None when it may not (or the source refuses it)."""
    try:
        sql = source_sql(plan, datasets)
    except Exception as e:  # noqa: BLE001 - cannot inspect the source (e.g. unreachable): federate
        log.info("whole-query push-down not possible, running federated: %s", e)
        return None
    if sql is None:
        return None
    target = _expected_schema(plan)
    if target is None:  # the federated engine cannot plan it: PostgreSQL may, with its own types
        statement = described(plan, datasets)
        if statement is None:
            return None
        sql, target = statement.sql, statement.schema
    conn = datasets[plan.scans[0].binding.dataset.lower()].connector
    try:
        reader = conn.query(sql)
    except Overloaded:
        raise  # the source is saturated: federating would only ask it again
    except Exception as e:  # noqa: BLE001 - the source cannot run it: federate instead
        log.info("whole-query push-down refused by the source, running federated: %s", e)
        return None
    if len(reader.schema) != len(target):
        reader.close()
        return None
    return _cast_to(reader, target)


def explain_lines(plan: Plan, datasets: Mapping[str, object]) -> list[str]:
    """What goes to the source: the whole statement, or each scan's statement."""
    sql = source_sql(plan, datasets)
    if sql is not None:
        where = "pushed down whole to " + datasets[plan.scans[0].binding.dataset.lower()].connector.source_id
        if _expected_schema(plan) is not None:
            return [where, f"source sql: {sql}"]
        statement = described(plan, datasets)
        if statement is not None:
            return [where + " (typed by PostgreSQL: the federated engine cannot plan it)",
                    f"source sql: {statement.sql}"]
    lines = []
    for s in plan.scans:
        if s.binding.kind != "source":
            continue
        ds = datasets.get((s.binding.dataset or "").lower())
        conn = ds.connector if ds is not None else None
        if not isinstance(conn, ScanSql):
            continue
        scan_sql = conn.scan_sql
        support = conn.classify_filters(s.filters)
        exact = all(x.value == "exact" for x in support)
        pushed = [f for f, x in zip(s.filters, support) if x.value != "unsupported"]
        lines.append(f"source sql for {s.register_as}: {scan_sql(s.columns, pushed, s.limit if exact else None)}")
        lines += [f"  filter {f.column} {f.op} {f.value!r}: {x.value}" for f, x in zip(s.filters, support)]
    return lines


def described(plan: Plan, datasets: Mapping[str, object]) -> DescribedStatement | None:
    """For a plan the federated engine cannot plan: its statement as PostgreSQL types it, when
    the whole plan may go down to PostgreSQL and calls only functions that may go there
    (engine.query.postgres_functions); else None. Worked out once per plan. A statement
    PostgreSQL itself refuses raises its error (the one that says what is wrong)."""
    if "described" not in plan.memo:
        plan.memo["described"] = _described(plan, datasets)
    return plan.memo["described"]


def _described(plan: Plan, datasets: Mapping[str, object]) -> DescribedStatement | None:
    sql = source_sql(plan, datasets)
    if sql is None:
        return None
    conn = datasets[plan.scans[0].binding.dataset.lower()].connector
    if dialect_of(conn) != "postgres" or not isinstance(conn, DescribesStatements):
        return None
    refused = refused_function(sql)
    if refused is not None:
        log.info("not pushed down whole: %s may not go to PostgreSQL", refused)
        return None
    return conn.described(sql)


def _expected_schema(plan: Plan) -> pa.Schema | None:
    """The schema the federated route returns for `plan` (DataFusion over empty tables), worked
    out once per plan."""
    if "expected_schema" not in plan.memo:
        plan.memo["expected_schema"] = _planned_schema(plan)
    return plan.memo["expected_schema"]


def _planned_schema(plan: Plan) -> pa.Schema | None:
    from .federated import federated_schema

    try:
        return federated_schema(plan)
    except Exception:  # noqa: BLE001
        return None


def _cast_to(reader: pa.RecordBatchReader, target: pa.Schema) -> pa.RecordBatchReader:
    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for batch in reader:
                arrays = []
                for array, field in zip(batch.columns, target):
                    if array.type != field.type:
                        if pa.types.is_decimal(field.type) and pa.types.is_string(array.type):
                            # numeric text -> exact decimal; more digits than the type: round
                            array = pc.cast(pc.cast(array, pa.decimal256(76, 38)), field.type, safe=False) \
                                if not _fits(array, field.type) else pc.cast(array, field.type)
                        else:
                            array = pc.cast(array, field.type)
                    arrays.append(array)
                yield pa.RecordBatch.from_arrays(arrays, schema=target)
        finally:
            reader.close()

    return pa.RecordBatchReader.from_batches(target, batches())


def _fits(array: pa.Array, typ: pa.DataType) -> bool:
    try:
        pc.cast(array, typ)
        return True
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
