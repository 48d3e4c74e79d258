"""`GET /`: the status page, read over HTTP and in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def server(module_satchel_server, module_demo_pod_dir):
    pod = (module_demo_pod_dir / "spicepod.yaml").read_text().replace(
        "description: Sales regions", f"description: {HOSTILE} Sales regions", 1)
    pod_dir = module_demo_pod_dir.parent / "status_pod"
    pod_dir.mkdir(exist_ok=True)
    (pod_dir / "data").exists() or (pod_dir / "data").symlink_to(module_demo_pod_dir / "data")
    srv = module_satchel_server(pod, pod_dir=pod_dir)
    for sql in ("SELECT count(*) AS n FROM orders", "SELECT * FROM regions", "SELECT nope FROM orders"):
        srv.sql(sql)
    return srv


def test_the_page_shows_datasets_columns_models_and_recent_queries(server):
    r = httpx.get(server.http_url + "/", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    for name in ("orders", "customers", "products", "regions"):
        assert f"<b>{name}</b>" in page
    assert "ordered_at" in page and "When the order was placed (UTC)." in page  # columns and their descriptions
    assert "SELECT count(*) AS n FROM orders" in page and "Column" in page  # a success and a failure
    assert "<svg" in page and "<polyline" in page and "No models in this pod." in page
    assert "http://" not in page and "https://" not in page and "<link" not in page  # nothing to fetch: works offline


def test_every_value_is_escaped(server):
    page = httpx.get(server.http_url + "/", timeout=30).text
    assert HOSTILE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_page_needs_a_key_when_the_pod_has_keys(satchel_server, demo_pod_dir):
    pod = (demo_pod_dir / "spicepod.yaml").read_text() + \
        '\nruntime:\n  auth:\n    api_key:\n      enabled: true\n      keys: ["${env:SATCHEL_TEST_API_KEY}"]\n'
    srv = satchel_server(pod, pod_dir=demo_pod_dir, api_key="k-status")
    assert httpx.get(srv.http_url + "/", timeout=30).status_code == 401
    page = httpx.get(srv.http_url + "/", headers={"X-API-Key": "k-status"}, timeout=30)
    assert page.status_code == 200 and "as api_key_1" in page.text


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian: apt-get install chromium)")
def test_in_a_real_browser(server, tmp_path: Path):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status_page.png"
    shot.unlink(missing_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", server.http_url + "/"], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<b>orders</b>" in dom.stdout and "Recent queries" in dom.stdout and "<polyline" in dom.stdout
    assert "<script>" not in dom.stdout  # the hostile description stayed text
    subprocess.run([CHROMIUM, *flags, "--window-size=1200,1000", f"--screenshot={shot}", server.http_url + "/"],
                   capture_output=True, timeout=120, check=True)
    assert shot.exists() and shot.stat().st_size > 10_000  # a rendered page, kept as a test artefact
