"""Maps a dataset's `from:` prefix to its connector class, importing lazily.

A connector whose optional dependency is missing fails only when a pod uses it, with an
error that names the extra to install.
"""

from __future__ import annotations

import importlib

from engine.errors import MissingDependency

from .base import Connector, DatasetSpec

# prefix -> (module, class name, pip extra)
_CONNECTORS: dict[str, tuple[str, str, str | None]] = {
    "file": ("connectors.files.file", "FileConnector", None),
    "http": ("connectors.files.http", "HttpFileConnector", None),
    "https": ("connectors.files.http", "HttpFileConnector", None),
    "postgres": ("connectors.sql.postgres", "PostgresConnector", "postgres"),
    "iceberg": ("connectors.iceberg.connector", "IcebergConnector", "iceberg"),
    "mongodb": ("connectors.mongodb.connector", "MongoConnector", "mongodb"),
    "elasticsearch": ("connectors.elasticsearch.connector", "ElasticsearchConnector", "elasticsearch"),
    "flightsql": ("connectors.sql.flightsql", "FlightSqlConnector", "flightsql"),
    "adbc": ("connectors.sql.adbc", "AdbcConnector", "adbc"),
}


# http(s) sources whose params ask for a paginated JSON API (connectors.files.http_api.API_PARAMS)
_HTTP_API = ("connectors.files.http_api", "HttpApiConnector")


def known_prefixes() -> list[str]:
    return sorted(_CONNECTORS)


def split_from(value: str) -> tuple[str, str]:
    """`postgres:public.orders` -> ("postgres", "public.orders"); URLs keep their scheme."""
    prefix, sep, rest = value.partition(":")
    if not sep:
        raise ValueError(f"'{value}' has no connector prefix; expected <connector>:<path>, one of: {', '.join(known_prefixes())}")
    if prefix in ("http", "https"):
        return prefix, value
    return prefix, rest


def create_connector(spec: DatasetSpec) -> Connector:
    """Instantiate the connector for `spec.prefix`."""
    try:
        module_name, class_name, extra = _CONNECTORS[spec.prefix]
    except KeyError:
        raise ValueError(f"unknown connector '{spec.prefix}'; known: {', '.join(known_prefixes())}") from None
    try:
        if spec.prefix in ("http", "https") and importlib.import_module(_HTTP_API[0]).uses_api_mode(spec.params):
            module_name, class_name = _HTTP_API
        module = importlib.import_module(module_name)
    except ImportError as e:
        hint = f"pip install 'satchel[{extra}]'" if extra else "reinstall satchel"
        raise MissingDependency(f"connector '{spec.prefix}' needs a missing dependency ({e.name}): {hint}") from e
    return getattr(module, class_name)(spec)
