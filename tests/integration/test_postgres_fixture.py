"""The PostgreSQL fixture itself: a machine without the server binaries FAILS the tests (never
skips them), with a message that says what to install."""

from __future__ import annotations

import pytest

from tests.integration import postgres_server as fixture


def test_missing_binaries_fail_clearly(monkeypatch) -> None:
    monkeypatch.setattr(fixture.shutil, "which", lambda name: None)
    monkeypatch.setattr(fixture.glob, "glob", lambda pattern: [])
    with pytest.raises(pytest.fail.Exception, match=r"PostgreSQL server binaries \(initdb, pg_ctl\) not found"):
        fixture.find_bindir()
