"""Iceberg catalog settings: the `from: iceberg:` path forms, the `iceberg_*` params, and the
pyiceberg catalog they open.

Two path forms:
- `iceberg:<namespace>.<table>` (the namespace may have levels: `a.b.t`), with the catalog
  given by params (`iceberg_catalog_type`, `iceberg_uri`, ...);
- `iceberg:https://host[:port]/<base>/v1/[<prefix>/]namespaces/<ns>/tables/<table>`: a REST
  catalog table URL (the Iceberg REST spec's path). The catalog URI is everything before
  `/v1/`; a multi-level namespace is written with `%1F` between levels, as the spec says.

Secret params (tokens, credentials, keys) are passed to pyiceberg as catalog properties and
never appear in errors or logs: every message from the library is scrubbed of them.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Mapping

from engine.errors import ConnectorError

CATALOG_TYPES = ("rest", "sql", "glue", "hive")
# param -> pyiceberg catalog property
PROPERTY_PARAMS: dict[str, str] = {
    "iceberg_uri": "uri",
    "iceberg_warehouse": "warehouse",
    "iceberg_token": "token",
    "iceberg_credential": "credential",
    "iceberg_scope": "scope",
    "iceberg_oauth2_server_uri": "oauth2-server-uri",
    "iceberg_s3_access_key_id": "s3.access-key-id",
    "iceberg_s3_secret_access_key": "s3.secret-access-key",
    "iceberg_s3_session_token": "s3.session-token",
    "iceberg_s3_region": "s3.region",
    "iceberg_s3_endpoint": "s3.endpoint",
    "iceberg_glue_region": "glue.region",
    "iceberg_glue_access_key_id": "glue.access-key-id",
    "iceberg_glue_secret_access_key": "glue.secret-access-key",
    "iceberg_glue_session_token": "glue.session-token",
}
SECRET_PARAMS = ("iceberg_token", "iceberg_credential", "iceberg_s3_secret_access_key", "iceberg_s3_session_token",
                 "iceberg_glue_secret_access_key", "iceberg_glue_session_token")
OTHER_PARAMS = ("iceberg_catalog_type", "iceberg_catalog_name")
ICEBERG_PARAMS = tuple(PROPERTY_PARAMS) + OTHER_PARAMS
# catalog type -> params it cannot work without
REQUIRED: dict[str, tuple[str, ...]] = {"rest": ("iceberg_uri",), "sql": ("iceberg_uri",), "hive": ("iceberg_uri",),
                                        "glue": ()}


@dataclass(frozen=True)
class CatalogSettings:
    """Which catalog to open (properties hold secrets: never print them) and which table."""

    catalog_type: str
    name: str
    properties: Mapping[str, str] = field(repr=False)
    namespace: tuple[str, ...]
    table: str
    secrets: tuple[str, ...] = field(repr=False, default=())

    @property
    def identifier(self) -> tuple[str, ...]:
        return (*self.namespace, self.table)

    @property
    def table_name(self) -> str:
        return ".".join(self.identifier)

    def scrub(self, text: str) -> str:
        """`text` with every secret (and any credentials in URLs) replaced by ***."""
        for s in self.secrets:
            text = text.replace(s, "***").replace(urllib.parse.quote(s, safe=""), "***")
        return re.sub(r"(\w+://)[^/\s@'\"]+@", r"\1***@", text)


def parse_settings(dataset: str, path: str, params: Mapping[str, str], base_dir: str = ".") -> CatalogSettings:
    """The catalog settings for `from: iceberg:<path>` with `params`; ConnectorError naming
    the dataset and param when something is wrong or missing."""
    p = {k: str(v) for k, v in params.items()}
    path = path.strip()
    if path.startswith(("http://", "https://")):
        uri, namespace, table = _parse_rest_url(dataset, path)
        if "iceberg_uri" in p and p["iceberg_uri"].rstrip("/") != uri:
            raise ConnectorError(f"dataset '{dataset}': the from: URL already names the REST catalog; "
                                 f"leave out iceberg_uri (or give the <namespace>.<table> form)")
        p["iceberg_uri"] = uri
        p.setdefault("iceberg_catalog_type", "rest")
    else:
        namespace, table = _parse_identifier(dataset, path)
    catalog_type = p.get("iceberg_catalog_type", "rest").strip().lower()
    if catalog_type not in CATALOG_TYPES:
        raise ConnectorError(f"dataset '{dataset}': unknown iceberg_catalog_type '{catalog_type}'; "
                             f"allowed: {', '.join(CATALOG_TYPES)}")
    missing = [k for k in REQUIRED[catalog_type] if not p.get(k)]
    if missing:
        raise ConnectorError(f"dataset '{dataset}': an Iceberg {catalog_type} catalog needs param(s) "
                             f"{', '.join(missing)}")
    props = {"type": catalog_type}
    for key, prop in PROPERTY_PARAMS.items():
        if p.get(key):
            props[prop] = p[key]
    if catalog_type == "sql":
        props["uri"] = _absolute_sqlite(props["uri"], base_dir)
        if "warehouse" in props:
            props["warehouse"] = _absolute_warehouse(props["warehouse"], base_dir)
    secrets = tuple(p[k] for k in SECRET_PARAMS if p.get(k))
    secrets += tuple(_url_password(props.get("uri", "")))
    return CatalogSettings(catalog_type, p.get("iceberg_catalog_name", "satchel"), props, namespace, table, secrets)


def _parse_identifier(dataset: str, path: str) -> tuple[tuple[str, ...], str]:
    parts = [x for x in path.split(".")]
    if len(parts) < 2 or not all(x.strip() for x in parts):
        raise ConnectorError(f"dataset '{dataset}': 'from: iceberg:{path}' must name <namespace>.<table> "
                             f"(or be a REST catalog table URL .../v1/namespaces/<ns>/tables/<table>)")
    return tuple(x.strip() for x in parts[:-1]), parts[-1].strip()


_REST_PATH = re.compile(r"^(?P<base>.*?)/v1/(?:[^/]+/)?namespaces/(?P<ns>[^/]+)/tables/(?P<table>[^/]+)/?$")


def _parse_rest_url(dataset: str, url: str) -> tuple[str, tuple[str, ...], str]:
    split = urllib.parse.urlsplit(url)
    m = _REST_PATH.match(split.path)
    if not m or not split.netloc:
        raise ConnectorError(f"dataset '{dataset}': an Iceberg REST table URL must look like "
                             f"https://host/<base>/v1/namespaces/<namespace>/tables/<table>")
    namespace = tuple(urllib.parse.unquote(m.group("ns")).split("\x1f"))
    table = urllib.parse.unquote(m.group("table"))
    uri = urllib.parse.urlunsplit((split.scheme, split.netloc, m.group("base"), "", "")).rstrip("/")
    return uri, namespace, table


def _absolute_sqlite(uri: str, base_dir: str) -> str:
    """`sqlite:///relative.db` resolves against the pod's directory (SQLAlchemy would use the cwd)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and not uri[len(prefix):].startswith(":memory:"):
        return prefix + os.path.abspath(os.path.join(base_dir, uri[len(prefix):]))
    return uri


def _absolute_warehouse(warehouse: str, base_dir: str) -> str:
    if "://" in warehouse:
        return warehouse
    return "file://" + os.path.abspath(os.path.join(base_dir, warehouse))


def _url_password(uri: str) -> list[str]:
    try:
        password = urllib.parse.urlsplit(uri).password
    except ValueError:
        return []
    return [password, urllib.parse.unquote(password)] if password else []
