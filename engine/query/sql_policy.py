"""Parsing the public (PostgreSQL-flavoured) SQL and enforcing read-only from the parse tree."""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, Sequence

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError
from sqlglot.tokens import TokenType

from ..errors import ReadOnlyViolation, SqlError
from . import information_schema, sql_limits
from .intervals import needs_reading, read_interval
from .sql_limits import SqlLimits
from .to_char import is_time_template, number_to_char, to_char


_POSTGRES_SERIES = Postgres.Generator.TRANSFORMS[exp.ExplodingGenerateSeries]


class Satchel(Postgres):
    """The public dialect: PostgreSQL as clients write it, where `match(column, 'words')` (the
    full-text predicate pushed to search sources) is a plain function call, not MySQL's
    MATCH ... AGAINST as sqlglot reads MATCH otherwise. Registered with sqlglot as "satchel"."""

    # Time format patterns sqlglot's PostgreSQL dialect does not know, for to_timestamp and
    # to_date (to_char's templates are read by `to_char`), and to write strftime formats back as
    # PostgreSQL's for a query pushed down whole: 'Mon DD' was read as 'Mon 15'.
    TIME_MAPPING = {**Postgres.TIME_MAPPING, "Mon": "%b", "Month": "%B", "FMMonth": "%B", "Dy": "%a", "Day": "%A",
                    "FMDay": "%A", "AM": "%p", "PM": "%p", "HH": "%I", "FMHH": "%-I"}

    class Generator(Postgres.Generator):
        # generate_series in FROM in lower case: DataFusion finds table functions by exact name
        TRANSFORMS = {**Postgres.Generator.TRANSFORMS, exp.ExplodingGenerateSeries: lambda self, e: (
            self.func("generate_series", e.args.get("start"), e.args.get("end"), e.args.get("step"), normalize=False)
            if isinstance(e.parent, exp.Table) else _POSTGRES_SERIES(self, e))}

    class Parser(Postgres.Parser):
        FUNCTION_PARSERS = {k: v for k, v in Postgres.Parser.FUNCTION_PARSERS.items() if k != "MATCH"}
        # vector_search(table, 'text', ...) is Satchel's (Spice's) search table function, not BigQuery's
        FUNCTIONS = {**{k: v for k, v in Postgres.Parser.FUNCTIONS.items() if k != "VECTOR_SEARCH"},
                     # length under its other names, named so as an output column (not "length")
                     "CHAR_LENGTH": lambda args: _named(exp.Length.from_arg_list(args), "char_length"),
                     "CHARACTER_LENGTH": lambda args: _named(exp.Length.from_arg_list(args), "character_length")}
        # to_char(time, 'template') read as PostgreSQL reads the template (see `to_char`); a
        # function parser, as the expression it makes is not a call of two arguments
        FUNCTION_PARSERS = {**FUNCTION_PARSERS,
                            "TO_CHAR": lambda self: _to_char(self._parse_csv(self._parse_assignment), self.dialect)}
        # PostgreSQL has no lambdas: `f(payload -> 'arr')` reads JSON (a lambda, DuckDB's `x -> x + 1`,
        # was rendered for DuckDB as `LAMBDA payload : 'arr'`); `=>` still names an argument
        LAMBDAS = {k: v for k, v in Postgres.Parser.LAMBDAS.items() if k != TokenType.ARROW}

        def _parse_interval_span(self, this: exp.Expression, parse_function_unit: bool = True) -> exp.Interval:
            """INTERVAL 'text' read whole as PostgreSQL reads it (`intervals`), where sqlglot kept
            only its first pair ('1 day 02:00' was one day); with a unit after it, as sqlglot reads it."""
            unit_next = self._curr is not None and (self._curr.token_type == TokenType.VAR or
                                                    self._curr.text.upper() in self.dialect.VALID_INTERVAL_UNITS)
            if this is not None and this.is_string and not unit_next and needs_reading(this.name):
                read = read_interval(this.name)
                if read is not None:
                    return self.expression(exp.Interval(this=exp.Literal.string(read.words())))
            interval = super()._parse_interval_span(this, parse_function_unit)
            if isinstance(interval.args.get("unit"), exp.IntervalSpan) and ":" in interval.this.name \
                    and (read := read_interval(interval.this.name)) is not None:  # '1:30' HOUR TO MINUTE
                return self.expression(exp.Interval(this=exp.Literal.string(read.words())))
            return interval


def _named(node: exp.Expression, name: str) -> exp.Expression:
    node.meta["pg_name"] = name
    return node


def _to_char(args: list, dialect: Any) -> exp.Expression:
    if len(args) == 2 and isinstance(args[1], exp.Literal) and args[1].is_string:
        template = args[1].this
        return to_char(args[0], template) if is_time_template(template) else number_to_char(args[0], template)
    return _POSTGRES_TO_CHAR(args, dialect)


_POSTGRES_TO_CHAR = Postgres.Parser.FUNCTIONS["TO_CHAR"]
PUBLIC_DIALECT = "satchel"
_DIALECT = Satchel()
_TOKENIZERS = threading.local()  # a sqlglot tokenizer keeps the text it works on: one per thread


def _tokenize(text: str) -> list:
    tokenizer = getattr(_TOKENIZERS, "tokenizer", None)
    if tokenizer is None:
        tokenizer = _TOKENIZERS.tokenizer = _DIALECT.tokenizer()
    return tokenizer.tokenize(text)

logging.getLogger("sqlglot").setLevel(logging.ERROR)

# Statement roots a query may have. Everything else (DDL, DML, COPY, ATTACH, PRAGMA, SET,
# INSTALL/LOAD, CALL, transactions...) is refused.
_READ_ROOTS = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery, exp.Values)
_READ_KEYWORDS = {"SELECT", "WITH", "VALUES"}
# Words that start a (PostgreSQL or DuckDB) statement other than a read: refused as writes.
# Any other first word is a typo or not SQL at all, reported as a syntax error.
_OTHER_STATEMENT_KEYWORDS = {
    "ABORT", "ALTER", "ANALYZE", "ATTACH", "BEGIN", "CALL", "CHECKPOINT", "CLUSTER", "COMMENT",
    "COMMIT", "COPY", "CREATE", "DEALLOCATE", "DECLARE", "DELETE", "DESCRIBE", "DETACH", "DISCARD",
    "DO", "DROP", "END", "EXECUTE", "EXPORT", "FETCH", "FORCE", "FROM", "GRANT", "IMPORT", "INSERT",
    "INSTALL", "LISTEN", "LOAD", "LOCK", "MERGE", "MOVE", "NOTIFY", "PIVOT", "PRAGMA", "PREPARE",
    "REASSIGN", "REFRESH", "REINDEX", "RELEASE", "REPLACE", "RESET", "REVOKE", "ROLLBACK",
    "SAVEPOINT", "SECURITY", "SET", "SHOW", "START", "SUMMARIZE", "TABLE", "TRUNCATE", "UNLISTEN",
    "UNPIVOT", "UPDATE", "UPSERT", "USE", "VACUUM",
}
# Nodes that write or lock even inside a SELECT.
_WRITE_NODES = (exp.Into, exp.Lock, exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop,
                exp.Alter, exp.Copy, exp.Command, exp.Set, exp.Pragma, exp.Use, exp.TruncateTable)


def statement_tokens(sql: str, limits: SqlLimits = SqlLimits()) -> tuple[str, list]:
    """The statement's text as parsed (no byte-order mark, outer blanks or final `;`) and its
    tokens, within `limits`."""
    text = sql.lstrip("\ufeff").strip().rstrip(";").strip()  # a byte-order mark is not part of the SQL
    if not text:
        raise SqlError("empty SQL statement")
    return text, sql_limits.check(text, _tokenize, limits)


def parse_query(sql: str, limits: SqlLimits = SqlLimits()) -> tuple[exp.Expression, bool]:
    """Parse one read-only statement within `limits` (checked before parsing). Returns (tree, is_explain)."""
    text, tokens = statement_tokens(sql, limits)  # one tokenizing serves the parser too
    explain = False
    words = _leading_words(tokens, 2)
    if words and words[0] == "EXPLAIN":
        if len(words) == 1:
            raise SqlError("EXPLAIN needs a query to explain")
        explain, text = True, text[_word_end(text, "EXPLAIN"):].strip()
        if words[1].split()[0] == "ANALYZE":
            raise SqlError("EXPLAIN ANALYZE is not supported (it would run the query to time it): use EXPLAIN "
                           "for the plan, or run the query (runtime.task_history records its duration)")
        tokens = _tokenize(text)
    words = _leading_words(tokens, 1)
    first = words[0] if words else ""
    if first in ("SHOW", "DESCRIBE", "DESC"):
        return _shown(text, first), explain
    if first not in _READ_KEYWORDS and first.isidentifier() and first not in _OTHER_STATEMENT_KEYWORDS:
        raise SqlError(f"SQL syntax error: {first} does not start a SQL statement; queries start with SELECT, WITH or VALUES")
    if first not in _READ_KEYWORDS:
        raise ReadOnlyViolation(f"only read queries (SELECT) are allowed; {first} statements are refused")
    try:
        statements = [s for s in _DIALECT.parser().parse(tokens, text) if s is not None]
    except ParseError as e:
        raise SqlError(f"SQL syntax error: {_first_error(e)}") from None
    if len(statements) != 1:
        raise ReadOnlyViolation(
            f"exactly one statement per query is allowed; got {len(statements)} (multi-statement strings are refused)"
        )
    tree = statements[0]
    check_read_only(tree)
    return _plain_unicode_strings(tree), explain


def _shown(text: str, first: str) -> exp.Expression:
    """The information_schema query a SHOW or DESCRIBE statement stands for; other SHOW
    statements are refused (they read settings, not data)."""
    rest = text[_word_end(text, first):].strip()
    words = [(t.text.upper(), t.start) for t in (_tokenize(rest) if rest else [])]
    tree = information_schema.shown(first, [w for w, _ in words], rest, [at for _, at in words], PUBLIC_DIALECT)
    if tree is None:
        shown = " ".join(text.split())
        raise ReadOnlyViolation(f"'{shown if len(shown) <= 60 else shown[:57] + '...'}' is not supported; "
                                f"{information_schema.SUPPORTED}")
    return tree


_UNICODE_ESCAPE = r"(?:{e}{e})|(?:{e}\+([0-9A-Fa-f]{{6}}))|(?:{e}([0-9A-Fa-f]{{4}}))"


def _plain_unicode_strings(tree: exp.Expression) -> exp.Expression:
    """PostgreSQL's `U&'d\\0061t\\+000061' [UESCAPE '!']` strings as the plain strings they mean
    (no engine behind the planner reads the escapes)."""
    def plain(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.UnicodeString):
            return node
        escape = node.args.get("escape")
        char = escape.this if isinstance(escape, exp.Literal) else "\\"
        pattern = _UNICODE_ESCAPE.format(e=re.escape(char))
        try:
            text = re.sub(pattern, lambda m: chr(int(m.group(1) or m.group(2), 16)) if (m.group(1) or m.group(2))
                          else char, node.this)
        except (ValueError, OverflowError):
            raise SqlError(f"invalid Unicode escape in U&'{node.this}'") from None
        return exp.Literal.string(text)

    return tree.transform(plain) if tree.find(exp.UnicodeString) else tree


def _leading_words(tokens: list, n: int) -> list[str]:
    """The first `n` tokens (upper-cased), skipping comments and opening parentheses."""
    return [t.text.upper() for t in tokens if t.text != "("][:n]


def _word_end(text: str, word: str) -> int:
    """Where the first occurrence of keyword `word` ends (after any leading comments)."""
    match = re.search(rf"\b{word}\b", text, re.IGNORECASE)
    return match.end() if match else 0


def check_read_only(tree: exp.Expression) -> None:
    """Refuse anything but a pure read, naming what was found."""
    if not isinstance(tree, _READ_ROOTS):
        kind = _statement_kind(tree)
        raise ReadOnlyViolation(f"only read queries (SELECT) are allowed; {kind} statements are refused")
    for node in tree.walk():
        if isinstance(node, _WRITE_NODES):
            raise ReadOnlyViolation(f"only read queries are allowed; found {_statement_kind(node)} inside the query")
        if isinstance(node, exp.Func) and _denied_function(_function_name(node)):
            raise ReadOnlyViolation(f"function {_function_name(node)}() is not allowed: it reads files, settings, "
                                    f"the environment or engine state; query datasets by name")
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier) and _looks_like_path(node.name):
            raise ReadOnlyViolation(f"'{node.name}' looks like a file path; reading files is not allowed, "
                                    f"query datasets by name")


# Functions (scalar or table) that read files, settings, the environment or engine internals.
_DENIED_FUNCTIONS = {
    "current_setting", "getenv", "getvariable", "set_config", "setseed", "nextval", "currval", "glob",
    "query", "query_table", "which_secret", "load_extension", "install_extension", "pg_read_file",
    "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "lo_import", "lo_export",
}
_DENIED_PREFIXES = ("read_", "duckdb_", "pragma_", "parquet_", "sniff_", "iceberg_", "delta_", "sqlite_",
                    "postgres_", "mysql_", "json_execute", "arrow_scan", "scan_")
_PATH_CHARS = set("/\\*?~")


def _function_name(node: exp.Func) -> str:
    return (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()


def _denied_function(name: str) -> bool:
    return name in _DENIED_FUNCTIONS or name.startswith(_DENIED_PREFIXES)


def _looks_like_path(name: str) -> bool:
    return bool(_PATH_CHARS & set(name))


def bind_parameters(tree: exp.Expression, params: Sequence[Any] | None) -> exp.Expression:
    """Replace `?` and `$n` placeholders with literal values (as typed SQL literals)."""
    holders = _in_text_order(tree, list(tree.find_all(exp.Placeholder, exp.Parameter, bfs=False)))
    if not holders:
        if params:
            raise SqlError(f"the query has no parameters but {len(params)} were given")
        return tree
    params = list(params or [])
    positional = 0
    for node in holders:
        if isinstance(node, exp.Parameter):
            try:
                index = int(node.this.name) - 1
            except (TypeError, ValueError):
                raise SqlError(f"unsupported parameter {node.sql()}; use ? or $1, $2 ...") from None
        elif node.this and not node.name.isdigit():  # a bare `?` has no `this` (its .name is "?")
            raise SqlError(f"named parameters (:{node.name}) are not supported; use ? or $1, $2 ...")
        else:
            index, positional = positional, positional + 1
        if index < 0 or index >= len(params):
            raise SqlError(f"the query needs parameter {index + 1} but {len(params)} were given")
        value = exp.convert(params[index])
        value.meta[BOUND] = True  # a value that may differ from one execution to the next (templates)
        node.replace(value)
    return tree


BOUND = "satchel_bound"  # meta key of a literal bound from a parameter


def _in_text_order(tree: exp.Expression, holders: list[exp.Expression]) -> list[exp.Expression]:
    """`holders` in the order they appear in the statement's text. A tree walk follows the
    order the parser stored clauses in (a LIMIT before the WHERE), not the text; the rendered
    SQL follows the text, so each holder's place is found there, by a marker in a copy."""
    if len(holders) < 2:
        return holders
    copy = tree.copy()
    for i, node in enumerate(copy.find_all(exp.Placeholder, exp.Parameter, bfs=False)):
        node.replace(exp.Literal.string(f"__satchel_param_{i}__"))
    text = copy.sql()
    return [holders[i] for i in sorted(range(len(holders)), key=lambda i: text.find(f"__satchel_param_{i}__"))]


def parameter_count(tree: exp.Expression) -> int:
    count, numbered = 0, 0
    for node in tree.find_all(exp.Placeholder, exp.Parameter):
        if isinstance(node, exp.Parameter) and node.this is not None and node.this.name.isdigit():
            numbered = max(numbered, int(node.this.name))
        else:
            count += 1
    return max(count, numbered)


def _statement_kind(node: exp.Expression) -> str:
    if isinstance(node, exp.Command):
        return str(node.this).upper()
    if isinstance(node, exp.Alias) and isinstance(node.this, exp.Column):  # e.g. INSTALL x
        return node.this.name.upper()
    return type(node).__name__.upper()


def _first_error(e: ParseError) -> str:
    if e.errors:
        err = e.errors[0]
        return f"{err.get('description', 'invalid syntax')} at line {err.get('line')}, column {err.get('col')}"
    return str(e).splitlines()[0]
