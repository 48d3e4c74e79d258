"""Typed, frozen models of a spicepod (see /work/shared/SPICEPOD.md). Import them from engine.config.

Models validate single fields; checks that span fields, datasets or the connector registry live
in engine.config_checks so that every problem in a file is reported in one pass.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, Mapping

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from accel.base import TableIndex

from .arrow_sql_types import arrow_type
from .durations import parse_duration
from .config_types import (
    Columns, Duration, FrozenMap, Identifier, NonEmptyStr, OptionalDuration, ParamStr, ParamValue,
    PositiveDuration, Size, Str, frozen_map, parse_columns,
)

ACCELERATION_PARAMS = ("duckdb_file", "duckdb_memory_limit", "refresh_min_interval", "refresh_timeout")
# Satchel extensions (Spice has no such keys): on-demand refreshes of a dataset start at most this
# often; a refresh (retries included) that runs longer is cancelled and keeps the last good data.
DEFAULT_REFRESH_MIN_INTERVAL = timedelta(seconds=10)
DEFAULT_REFRESH_TIMEOUT = timedelta(minutes=10)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)


class Chunking(_Frozen):
    """Long text split into overlapping chunks, each embedded on its own (Spice's keys). Sizes
    count words (whitespace-separated), Satchel's stand-in for the model's tokens."""

    enabled: bool = False
    target_chunk_size: int = Field(200, ge=1)
    overlap_size: int = Field(0, ge=0)
    trim_whitespace: bool = True


class ColumnEmbedding(_Frozen):
    """`columns[].embeddings[]`: vectors of this column computed at refresh by an `embeddings:` model."""

    from_: NonEmptyStr = Field(alias="from")  # the name of an `embeddings:` entry
    row_id: Columns | None = None  # the row's identity; default: acceleration.primary_key
    chunking: Chunking | None = None


class FullTextSearch(_Frozen):
    """`columns[].full_text_search`: a BM25 index on this column for text_search()."""

    enabled: bool = False
    row_id: Columns | None = None


class Column(_Frozen):
    name: NonEmptyStr
    description: Str | None = None
    type: Str | None = None  # a SQL type; where a connector infers the schema, this wins
    embeddings: tuple[ColumnEmbedding, ...] = ()
    full_text_search: FullTextSearch | None = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                arrow_type(v)
            except ValueError as e:
                raise PydanticCustomError("sql_type", "{message}", {"message": str(e)}) from None
        return v


class Acceleration(_Frozen):
    """How a dataset is kept in an embedded accelerator and refreshed."""

    enabled: bool = True
    engine: Literal["arrow", "duckdb"] = "arrow"
    mode: Literal["memory", "file"] = "memory"
    refresh_mode: Literal["full", "append", "changes"] = "full"
    refresh_check_interval: PositiveDuration | None = None
    refresh_cron: Str | None = None
    refresh_sql: NonEmptyStr | None = None
    refresh_data_window: PositiveDuration | None = None
    refresh_append_overlap: Duration | None = None
    refresh_retry_enabled: bool = True
    refresh_retry_max_attempts: int = Field(3, ge=1)
    refresh_jitter_enabled: bool = False
    refresh_jitter_max: PositiveDuration | None = None
    retention_check_enabled: bool = False
    retention_period: PositiveDuration | None = None
    retention_check_interval: PositiveDuration | None = None
    on_zero_results: Literal["return_empty", "use_source"] = "return_empty"
    # Spice's snapshot modes, and the Satchel extension `follow` (load only from snapshots)
    snapshots: Literal["disabled", "enabled", "bootstrap_only", "create_only", "follow"] = "disabled"
    primary_key: Columns | None = None
    on_conflict: frozen_map(Literal["drop", "upsert"]) = Field(default_factory=FrozenMap)
    indexes: frozen_map(Literal["enabled", "unique"]) = Field(default_factory=FrozenMap)
    params: frozen_map(ParamStr) = Field(default_factory=FrozenMap)

    @property
    def table_indexes(self) -> tuple[TableIndex, ...]:
        """`indexes` as the accelerator builds them (keys were checked by engine.config_checks)."""
        return tuple(TableIndex(parse_columns(key), kind == "unique") for key, kind in self.indexes.items())

    @field_validator("refresh_cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        from croniter import croniter

        if value is not None and not croniter.is_valid(value):
            raise ValueError("invalid cron expression; expected 5 fields, e.g. '*/15 * * * *'")
        return value

    @field_validator("refresh_append_overlap")
    @classmethod
    def _overlap(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(0):
            raise ValueError("must not be negative")
        return value

    @field_validator("params")
    @classmethod
    def _params(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        unknown = [k for k in value if k not in ACCELERATION_PARAMS]
        if unknown:
            raise PydanticCustomError(
                "unknown_keys", "unknown keys {keys}", {"keys": unknown, "allowed": list(ACCELERATION_PARAMS)}
            )
        return value

    @property
    def refresh_min_interval(self) -> timedelta:
        """The least time between the end of an on-demand refresh and the start of the next one."""
        text = self.params.get("refresh_min_interval")
        return parse_duration(text) if text is not None else DEFAULT_REFRESH_MIN_INTERVAL

    @property
    def refresh_timeout(self) -> timedelta:
        """How long one refresh (retries included) may run before it is cancelled; 0: no limit."""
        text = self.params.get("refresh_timeout")
        return parse_duration(text) if text is not None else DEFAULT_REFRESH_TIMEOUT


class Dataset(_Frozen):
    """One table clients can query, read through a connector and optionally accelerated."""

    from_: NonEmptyStr = Field(alias="from")
    name: Identifier
    description: Str | None = None
    columns: tuple[Column, ...] = ()
    params: frozen_map(ParamStr) = Field(default_factory=FrozenMap)
    time_column: NonEmptyStr | None = None
    time_format: Literal["timestamp", "timestamptz", "unix_seconds", "unix_millis", "ISO8601", "date"] | None = None
    ready_state: Literal["on_load", "on_registration"] = "on_load"
    unsupported_type_action: Literal["error", "warn", "ignore", "string"] = "error"
    access: Literal["read", "read_write"] = "read"
    acceleration: Acceleration | None = None

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        split_from(value)
        return value

    @property
    def connector_prefix(self) -> str:
        return split_from(self.from_)[0]

    @property
    def connector_path(self) -> str:
        return split_from(self.from_)[1]

    @property
    def column_descriptions(self) -> dict[str, str]:
        return {c.name: c.description for c in self.columns if c.description}

    @property
    def column_types(self) -> dict[str, pa.DataType]:
        """The Arrow types of the columns the pod gives a `type`."""
        return {c.name: arrow_type(c.type) for c in self.columns if c.type}

    @property
    def accelerated(self) -> bool:
        """True when an acceleration block is present and enabled."""
        return self.acceleration is not None and self.acceleration.enabled

    def row_id(self, given: tuple[str, ...] | None) -> tuple[str, ...]:
        """A search index's row identity: its own `row_id`, else the acceleration's primary key."""
        return tuple(given or (self.acceleration.primary_key if self.acceleration else None) or ())


def split_from(value: str) -> tuple[str, str]:
    """`file:data/x.parquet` -> ("file", "data/x.parquet"); `https://h/x.csv` keeps the whole URL."""
    prefix, sep, rest = value.partition(":")
    ok = sep and rest.strip() and prefix[:1].isalpha() and all(c.isalnum() or c in "_.-" for c in prefix)
    if not ok:
        raise ValueError(
            "expected <connector>:<path>, e.g. file:data/orders.parquet, postgres:public.orders "
            "or https://host/data.csv"
        )
    if prefix in ("http", "https"):
        return prefix, value
    return prefix, rest


class View(_Frozen):
    name: Identifier
    description: Str | None = None
    sql: NonEmptyStr


class Model(_Frozen):
    """A model served on the OpenAI-compatible routes (also the shape of `embeddings` items)."""

    from_: NonEmptyStr = Field(alias="from")
    name: NonEmptyStr
    params: frozen_map(ParamValue) = Field(default_factory=FrozenMap)

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        prefix, _, rest = value.partition(":")
        if prefix not in MODEL_PROVIDERS or not rest.strip():
            raise ValueError("expected file:<path>.gguf or openai:<model>, e.g. file:models/gemma-3-270m-q4_k_m.gguf")
        return value

    @field_validator("params")
    @classmethod
    def _prices(cls, params: FrozenMap) -> FrozenMap:
        for key in PRICE_PARAMS:
            if key in params:
                try:
                    ok = float(params[key]) >= 0  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    ok = False
                if not ok:
                    raise ValueError(f"params.{key} must be a number >= 0 (a price per 1,000 tokens)")
        return params

    @property
    def prices(self) -> tuple[float, float]:
        """(input, output) price per 1,000 tokens (Satchel extension params; default 0)."""
        return tuple(float(self.params.get(k) or 0) for k in PRICE_PARAMS)  # type: ignore[return-value]

    @property
    def provider(self) -> str:
        return self.from_.partition(":")[0]

    @property
    def path(self) -> str:
        return self.from_.partition(":")[2]


MODEL_PROVIDERS = ("file", "openai")
PRICE_PARAMS = ("price_per_1k_input_tokens", "price_per_1k_output_tokens")
EMBEDDING_PROVIDERS = ("file", "openai", "huggingface")


class Embedding(Model):
    """An `embeddings:` entry: `file:` (a sentence-transformers directory or a .gguf file) and
    `huggingface:huggingface.co/<org>/<model>` run locally; `openai:` forwards."""

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        prefix, _, rest = value.partition(":")
        if prefix not in EMBEDDING_PROVIDERS or not rest.strip():
            raise ValueError("expected file:<model directory or .gguf>, huggingface:huggingface.co/<org>/<model> "
                             "or openai:<model>, e.g. huggingface:huggingface.co/sentence-transformers/all-MiniLM-L6-v2")
        return value


class SecretStore(_Frozen):
    from_: NonEmptyStr = Field(alias="from")
    name: NonEmptyStr


class ApiKeyAuth(_Frozen):
    enabled: bool = False
    keys: tuple[Str, ...] = ()


COLUMN_RULES = ("hidden", "null", "hash", "redact", "partial")  # partial: the last 4 characters; partial(N)


class DatasetPolicy(_Frozen):
    """What one principal sees of the datasets and views `name` matches (a name or a glob)."""

    name: NonEmptyStr
    filter: NonEmptyStr | None = None  # a condition on the dataset's columns; {{principal.name}}, {{principal.<attr>}}
    columns: frozen_map(NonEmptyStr) = Field(default_factory=FrozenMap)  # column -> rule (COLUMN_RULES)

    @field_validator("columns")
    @classmethod
    def _known_rules(cls, v: Mapping[str, str]) -> Mapping[str, str]:
        from .policy_rules import parse_rule  # one home for the rule syntax

        for column, rule in v.items():
            try:
                parse_rule(rule)
            except ValueError as e:
                raise PydanticCustomError("column_rule", "column '{column}': {message}",
                                          {"column": column, "message": str(e)}) from None
        return v

    @field_validator("filter")
    @classmethod
    def _one_condition(cls, v: str | None) -> str | None:
        if v is not None:
            from .policy_rules import parse_filter

            try:
                parse_filter(v, {"name": "x"}, check_only=True)
            except ValueError as e:
                raise PydanticCustomError("row_filter", "{message}", {"message": str(e)}) from None
        return v


class PrincipalLimits(_Frozen):
    max_rows: int | None = Field(default=None, ge=1)  # rows per result (the pod's max_rows also applies)
    query_timeout: PositiveDuration | None = None  # the pod's query_timeout also applies
    queries_per_minute: int | None = Field(default=None, ge=1)  # a token bucket: bursts up to this many
    max_concurrent_queries: int | None = Field(default=None, ge=1)
    model_tokens_per_hour: int | None = Field(default=None, ge=1)  # chat, tools, nsql, embeddings: input + output


class PrincipalConfig(_Frozen):
    """A Satchel extension: a named caller, its keys and what it may see and do."""

    name: Identifier
    keys: tuple[NonEmptyStr, ...] = Field(min_length=1)
    attributes: frozen_map(Str) = Field(default_factory=FrozenMap)
    datasets: tuple[DatasetPolicy, ...] = ()  # an entry may be just a name or glob; none: sees nothing
    task_history: Literal["own", "all"] = "own"
    limits: PrincipalLimits = PrincipalLimits()

    @field_validator("datasets", mode="before")
    @classmethod
    def _names_as_entries(cls, v: object) -> object:
        return [{"name": e} if isinstance(e, str) else e for e in v] if isinstance(v, (list, tuple)) else v


class AuthConfig(_Frozen):
    api_key: ApiKeyAuth = ApiKeyAuth()
    principals: tuple[PrincipalConfig, ...] = ()
    mask_salt: Str | None = None  # salts hashed columns (a secret: `${secrets:...}`); default: the pod's name


class TlsConfig(_Frozen):
    enabled: bool = False
    certificate_file: NonEmptyStr | None = None
    key_file: NonEmptyStr | None = None


class TracingConfig(_Frozen):
    """Satchel extension: export every task-history row as an OpenTelemetry span (OTLP/HTTP)."""

    otlp_endpoint: NonEmptyStr | None = None  # e.g. http://otel-collector:4318 (spans go to /v1/traces)
    otlp_headers: frozen_map(Str) = Field(default_factory=FrozenMap)  # e.g. an API key from ${secrets:...}
    service_name: NonEmptyStr = "satchel"

    @field_validator("otlp_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("expected an http(s) URL of an OTLP/HTTP receiver, e.g. http://otel-collector:4318")
        return value


class TaskHistoryConfig(_Frozen):
    enabled: bool = True
    retention_period: PositiveDuration = timedelta(hours=8)
    captured_output: Literal["none", "truncated"] = "none"


class ResultsCacheConfig(_Frozen):
    enabled: bool = False
    cache_max_size: Size | None = None
    item_ttl: PositiveDuration | None = None


DEFAULT_QUERY_TIMEOUT = timedelta(seconds=60)
"""Every query's deadline unless the pod says otherwise (`0s` turns it off)."""


class RuntimeParams(_Frozen):
    memory_limit: Size | None = None
    query_timeout: OptionalDuration = DEFAULT_QUERY_TIMEOUT
    max_rows: int | None = Field(None, ge=1)
    # Satchel extensions: SQL past these is refused before parsing (see engine.query.sql_limits)
    max_sql_length: int = Field(1 << 20, ge=1)
    max_sql_depth: int = Field(32, ge=1, le=40)
    max_sql_terms: int = Field(1000, ge=1, le=1000)
    coalesce_queries: bool = True  # Satchel extension: identical queries at once run once (engine.query.coalesce)


class SnapshotsConfig(_Frozen):
    """Where acceleration snapshots live (S3-compatible object storage)."""

    enabled: bool = False
    location: NonEmptyStr | None = None  # s3://bucket/prefix
    keep: int = Field(5, ge=1)  # Satchel extension: snapshots kept per dataset
    max_staleness: PositiveDuration | None = None  # Satchel extension: a follower older than this is stale
    # Satchel extension: what a follower does without a fresh snapshot (none published, or the
    # newest past max_staleness): `none` keeps waiting for one, `source` loads from its own source
    fallback: Literal["none", "source"] = "none"
    params: frozen_map(ParamStr) = Field(default_factory=FrozenMap)  # s3_endpoint, s3_region, s3_key, s3_secret


class RuntimeConfig(_Frozen):
    auth: AuthConfig = AuthConfig()
    tls: TlsConfig = TlsConfig()
    task_history: TaskHistoryConfig = TaskHistoryConfig()
    results_cache: ResultsCacheConfig = ResultsCacheConfig()
    params: RuntimeParams = RuntimeParams()
    snapshots: SnapshotsConfig = SnapshotsConfig()
    tracing: TracingConfig = TracingConfig()


DEFAULT_SECRET_STORES = (SecretStore(**{"from": "env", "name": "env"}),)
INTERNAL_FIELDS = ("source_file", "base_dir", "secret_values")  # set by the loader, not YAML keys


class Pod(_Frozen):
    """A loaded spicepod. `secret_values` (for redaction) is hidden from repr and dumps."""

    version: Literal["v1", "v1beta1"]
    kind: Literal["Spicepod"]
    name: NonEmptyStr
    secrets: tuple[SecretStore, ...] = DEFAULT_SECRET_STORES
    runtime: RuntimeConfig = RuntimeConfig()
    datasets: tuple[Dataset, ...] = ()
    models: tuple[Model, ...] = ()
    embeddings: tuple[Embedding, ...] = ()
    views: tuple[View, ...] = ()
    source_file: str = "spicepod.yaml"
    base_dir: str = "."
    secret_values: frozenset[str] = Field(default=frozenset(), repr=False, exclude=True)

    def dataset(self, name: str) -> Dataset | None:
        """The dataset called `name` (exact match first, then case-insensitive), or None."""
        return _by_name(self.datasets, name)

    def view(self, name: str) -> View | None:
        return _by_name(self.views, name)


def _by_name(items: tuple, name: str):  # type: ignore[no-untyped-def]
    for item in items:
        if item.name == name:
            return item
    low = name.lower()
    return next((i for i in items if i.name.lower() == low), None)
