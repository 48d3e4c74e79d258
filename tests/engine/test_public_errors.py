"""What a client is told when a query fails: an engine's own words (redacted, without file
directories), or, for a bug in Satchel (a Python error such as a KeyError), an internal error
that says where to look instead of the error's text ("query failed: 'from'" told nothing)."""

from __future__ import annotations

import logging

import pyarrow as pa
import pytest

from engine.errors import InternalError, SqlError
from engine.metrics import Metrics
from engine.query.accounting import Accounting
from engine.task_history import TaskHistory


@pytest.fixture
def accounting() -> Accounting:
    return Accounting(Metrics(), TaskHistory(), frozenset({"s3cr3t-v4lue"}), 1 << 30)


def test_a_python_error_is_an_internal_error_logged_with_its_traceback(accounting, caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="engine.query.accounting"):
        public = accounting.public_error(KeyError("from"))
    assert isinstance(public, InternalError) and public.code == "internal_error"
    assert "'from'" not in public.message and "server log" in public.message
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)


def test_an_engines_error_keeps_its_words_without_secrets_or_directories(accounting) -> None:
    public = accounting.public_error(RuntimeError("IO Error: cannot open /var/lib/satchel/pods/x.parquet (s3cr3t-v4lue)"))
    assert isinstance(public, SqlError)
    assert public.message == "query failed: IO Error: cannot open .../x.parquet (***)"
    arrow = accounting.public_error(pa.ArrowTypeError("cannot cast 'x' to int64"))  # a TypeError, but Arrow's word
    assert isinstance(arrow, SqlError) and "cannot cast 'x' to int64" in arrow.message
