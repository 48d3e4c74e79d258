"""The registry creates each connector by its `from:` prefix."""

from __future__ import annotations

import pytest

from connectors.base import Connector, DatasetSpec
from connectors.files.file import FileConnector
from connectors.files.http import HttpFileConnector
from connectors.registry import create_connector, known_prefixes, split_from


@pytest.mark.parametrize("source, cls", [
    ("file:data/orders.parquet", FileConnector),
    ("http://example.com/orders.csv", HttpFileConnector),
    ("https://example.com/orders.csv", HttpFileConnector),
])
def test_creates_connector_by_prefix(source: str, cls: type) -> None:
    prefix, path = split_from(source)
    conn = create_connector(DatasetSpec(name="orders", path=path, prefix=prefix))
    assert isinstance(conn, cls)
    assert isinstance(conn, Connector)  # satisfies the protocol
    assert conn.spec.path == path


def test_unknown_prefix_lists_known_ones() -> None:
    with pytest.raises(ValueError) as err:
        create_connector(DatasetSpec(name="x", path="t", prefix="nosuchdb"))
    message = str(err.value)
    assert "unknown connector 'nosuchdb'" in message
    for prefix in ("file", "http", "https"):
        assert prefix in known_prefixes() and prefix in message
