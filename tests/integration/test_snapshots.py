"""Acceleration snapshots through a real S3 API: `moto_server` (moto[server], a named test double
that speaks the S3 protocol to pyarrow's real S3 client). One publisher sidecar, two followers
whose source file does not even exist: they start from the snapshot, follow newer ones, refuse a
corrupt one and keep their data."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import httpx
import pytest
from pyarrow import fs

from tests.conftest import free_port
from tests.integration.postgres_server import postgres_server  # noqa: F401
from tests.processes import start_group, stop_group

pytestmark = pytest.mark.integration

KEY, SECRET = "satchel-test-key", "satchel-test-secret-value"
ENV = {"S3_KEY": KEY, "S3_SECRET": SECRET}
ROWS = "id,name\n" + "".join(f"{i},item {i}\n" for i in range(1, 501))


@pytest.fixture(scope="module")
def s3():
    port = free_port()
    proc = start_group([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                       stdout=open("/dev/null", "w"), stderr=open("/dev/null", "w"))
    store = fs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", access_key=KEY,
                            secret_key=SECRET, region="us-east-1", allow_bucket_creation=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            store.create_dir("fleet")
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    yield port, store
    stop_group(proc)


def pod(port: int, mode: str, source: str = "items.csv", staleness: str = "") -> str:
    interval = "      refresh_check_interval: 1s\n" if mode == "follow" else ""
    staleness = f"    max_staleness: {staleness}\n" if staleness else ""
    return f"""
version: v1
kind: Spicepod
name: fleet_{mode}
runtime:
  snapshots:
    enabled: true
    location: s3://fleet/snapshots
    keep: 2
{staleness}    params:
      s3_endpoint: http://127.0.0.1:{port}
      s3_key: ${{env:S3_KEY}}
      s3_secret: ${{env:S3_SECRET}}
datasets:
  - from: file:{source}
    name: items
    acceleration:
      engine: duckdb
      snapshots: {mode}
      params:
        refresh_min_interval: 0s
{interval}"""


def count(server) -> int:
    return server.sql("SELECT count(*) AS n FROM items").json()[0]["n"]


def status(server) -> dict:
    return next(d for d in httpx.get(server.http_url + "/v1/status", timeout=10).json()["datasets"]
                if d["name"] == "items")


def latest_json(store, path: str) -> dict:
    """`path`'s manifest; read again when the read met the file being replaced (S3 reads take the
    size, then the bytes: a torn read is the new file cut short), as SnapshotStore.latest does."""
    for _ in range(20):
        try:
            return json.loads(store.open_input_stream(path).read())
        except json.JSONDecodeError:
            time.sleep(0.1)
    return json.loads(store.open_input_stream(path).read())


def _rewrite(store, path: str, text: str) -> None:
    with store.open_output_stream(path) as out:
        out.write(text.encode())


def eventually(check, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_publisher_and_followers(s3, satchel_server, tmp_path):
    port, store = s3
    publisher = satchel_server(pod(port, "create_only"), files={"items.csv": ROWS}, env=ENV)
    assert eventually(lambda: store.get_file_info("fleet/snapshots/items/latest.json").type == fs.FileType.File)
    latest = latest_json(store, "fleet/snapshots/items/latest.json")
    assert latest["rows"] == 500 and len(latest["files"][0]["sha256"]) == 64
    assert KEY not in json.dumps(latest) and SECRET not in json.dumps(latest)

    followers = [satchel_server(pod(port, "follow", source="missing.csv"), env=ENV) for _ in range(2)]
    for f in followers:  # ready from the snapshot: their own source does not exist
        assert count(f) == 500
        assert status(f)["snapshot"]["id"] == latest["snapshot_id"]

    (publisher.pod_dir / "items.csv").write_text(ROWS + "501,item 501\n")
    r = httpx.post(publisher.http_url + "/v1/datasets/items/acceleration/refresh?wait=true", timeout=60)
    assert r.status_code in (200, 201), r.text
    for f in followers:
        assert eventually(lambda: count(f) == 501), "a follower did not swap to the newer snapshot"

    # a corrupt snapshot (its data differs from its manifest) is refused; the last good data stays
    newest = latest_json(store, "fleet/snapshots/items/latest.json")
    bad = dict(newest, snapshot_id="00000000T000000000000Z-corrupt")
    with store.open_output_stream(f"fleet/snapshots/items/{bad['snapshot_id']}/part-0.parquet") as out:
        out.write(b"not parquet at all")
    with store.open_output_stream("fleet/snapshots/items/latest.json") as out:
        out.write(json.dumps(bad).encode())
    for f in followers:
        err = eventually(lambda: status(f).get("last_error"))
        assert err and "corrupt" in err and SECRET not in err
        assert count(f) == 501

    # retention: the newest two snapshots kept (ids sort by time: the fake above is the oldest)
    r = httpx.post(publisher.http_url + "/v1/datasets/items/acceleration/refresh?wait=true", timeout=60)
    assert r.status_code in (200, 201), r.text
    infos = store.get_file_info(fs.FileSelector("fleet/snapshots/items"))
    kept = sorted(i.base_name for i in infos if i.type == fs.FileType.Directory)
    assert len(kept) == 2, kept
    for log in [publisher.log()] + [f.log() for f in followers]:
        assert SECRET not in log


def test_a_follower_past_max_staleness_is_not_ready_until_a_newer_snapshot(s3, satchel_server):
    port, store = s3
    body = lambda mode, **kw: pod(port, mode, **kw).replace("s3://fleet/snapshots", "s3://fleet/stale")  # noqa: E731
    publisher = satchel_server(body("create_only"), files={"items.csv": ROWS}, env=ENV)
    assert eventually(lambda: store.get_file_info("fleet/stale/items/latest.json").type == fs.FileType.File)
    # the snapshot must still be fresh when the follower is up: a loaded machine takes seconds to start one
    follower = satchel_server(body("follow", source="missing.csv", staleness="10s"), env=ENV, wait_ready=False)
    assert eventually(lambda: httpx.get(follower.http_url + "/v1/ready", timeout=10).status_code == 200)
    stale = eventually(lambda: httpx.get(follower.http_url + "/v1/ready", timeout=10).status_code == 503)
    assert stale and "stale" in httpx.get(follower.http_url + "/v1/ready", timeout=10).text
    assert status(follower)["snapshot"]["stale"] is True
    assert "satchel_snapshot_age_seconds" in httpx.get(follower.metrics_url, timeout=10).text
    assert count(follower) == 500  # still serving its last data
    r = httpx.post(publisher.http_url + "/v1/datasets/items/acceleration/refresh?wait=true", timeout=60)
    assert r.status_code in (200, 201), r.text
    assert eventually(lambda: httpx.get(follower.http_url + "/v1/ready", timeout=10).status_code == 200)


def test_a_follower_without_any_snapshot_says_so(s3, satchel_server):
    port, store = s3
    body = pod(port, "follow", source="missing.csv").replace("s3://fleet/snapshots", "s3://fleet/empty")
    server = satchel_server(body, env=ENV, wait_ready=False)
    err = eventually(lambda: status(server).get("last_error"))
    assert err and "no snapshot has been published" in err
    assert httpx.get(server.http_url + "/v1/ready", timeout=10).status_code == 503


def fleet_runtime(pg, port: int, where: Path, mode: str):
    from engine.config import load_pod
    from engine.runtime import Runtime

    where.mkdir(parents=True, exist_ok=True)
    interval = "      refresh_check_interval: 1s\n" if mode == "follow" else ""
    (where / "spicepod.yaml").write_text(f"""version: v1
kind: Spicepod
name: fleet
runtime:
  snapshots:
    enabled: true
    location: s3://fleet/pg
    params:
      s3_endpoint: http://127.0.0.1:{port}
      s3_key: ${{env:S3_KEY}}
      s3_secret: ${{env:S3_SECRET}}
datasets:
  - from: postgres:public.snap_orders
    name: snap_orders
    params:
{pg.params_yaml(6)}
    acceleration:
      engine: duckdb
      snapshots: {mode}
{interval}""")
    return Runtime(load_pod(where / "spicepod.yaml", env=ENV), data_dir=str(where / ".satchel"))


def test_a_postgres_source_sees_one_load_per_refresh_for_a_fleet(postgres_server, s3, tmp_path):
    """One publisher, ten followers (real PostgreSQL, its own statement log): after the first
    refresh, followers starting, polling and swapping send the source nothing."""
    port, _ = s3
    pg = postgres_server
    pg.execute("DROP TABLE IF EXISTS public.snap_orders", "CREATE TABLE public.snap_orders (id int PRIMARY KEY, v text)",
               "INSERT INTO public.snap_orders SELECT g, 'a' || g FROM generate_series(1, 500) g",
               "GRANT SELECT ON public.snap_orders TO satchel")

    def loads(offset: int) -> list[str]:
        return [s for s in pg.statements_since(offset) if "satchel pod=fleet" in s and "snap_orders" in s
                and "TO STDOUT" in s and "to_regclass" not in s]

    publisher = fleet_runtime(pg, port, tmp_path / "pub", "create_only")
    followers = []
    try:
        start = pg.log_offset()
        publisher.refresh("snap_orders", wait=True)
        assert len(loads(start)) == 1
        after_first = pg.log_offset()
        followers = [fleet_runtime(pg, port, tmp_path / f"f{i}", "follow") for i in range(10)]
        for f in followers:
            f.start()
        count = "SELECT count(*) AS n FROM snap_orders"
        for f in followers:
            assert eventually(lambda f=f: f.ready() and f.query(count).read_all().to_pylist() == [{"n": 500}])
        pg.execute("INSERT INTO public.snap_orders SELECT g, 'b' || g FROM generate_series(501, 600) g")
        publisher.refresh("snap_orders", wait=True)
        for f in followers:
            assert eventually(lambda f=f: f.query(count).read_all().to_pylist() == [{"n": 600}])
        time.sleep(1.5)  # more follower polls: none reaches the source
        since = [s for s in pg.statements_since(after_first) if "satchel pod=fleet" in s]
        assert len(loads(after_first)) == 1 and all("snap_orders" in s for s in since), since
    finally:
        for f in followers:
            f.stop()
        publisher.stop()


def test_a_publisher_killed_mid_upload_leaves_followers_on_the_last_good_snapshot(s3, satchel_server, tmp_path):
    """SIGKILL of the publisher while its snapshot's multipart upload is in progress (seen through
    the S3 API): followers keep serving the last good snapshot; the restarted publisher
    publishes cleanly over the orphaned upload, and followers move to it."""
    import os
    import signal

    import boto3
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    port, store = s3
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=KEY,
                          aws_secret_access_key=SECRET, region_name="us-east-1")
    rng = np.random.default_rng(7)

    def write(path: Path, rows: int) -> None:  # random doubles: about 16 MB per million rows in the snapshot
        pq.write_table(pa.table({"id": np.arange(rows), "x": rng.random(rows), "y": rng.random(rows)}), path)

    def big_pod(mode: str) -> str:
        return pod(port, mode, source="big.parquet").replace("name: items", "name: big").replace(
            "s3://fleet/snapshots", "s3://fleet/killed")

    pod_dir = tmp_path / "publisher"
    pod_dir.mkdir()
    write(pod_dir / "big.parquet", 1000)
    publisher = satchel_server(big_pod("create_only"), pod_dir=pod_dir, env=ENV)
    assert eventually(lambda: store.get_file_info("fleet/killed/big/latest.json").type == fs.FileType.File)
    first = latest_json(store, "fleet/killed/big/latest.json")
    follower = satchel_server(big_pod("follow").replace("big.parquet", "missing.parquet"), env=ENV)

    def rows(server) -> int:
        return server.sql("SELECT count(*) AS n FROM big").json()[0]["n"]

    assert rows(follower) == 1000

    write(pod_dir / "big.parquet", 3_000_000)
    r = httpx.post(publisher.http_url + "/v1/datasets/big/acceleration/refresh", timeout=30)
    assert r.status_code in (200, 201, 202), r.text

    def uploading() -> bool:
        uploads = client.list_multipart_uploads(Bucket="fleet", Prefix="killed/big/").get("Uploads", [])
        return bool(uploads)

    assert eventually(uploading, timeout=120), "the snapshot upload was never seen in progress"
    os.killpg(publisher.process.pid, signal.SIGKILL)
    publisher.process.wait(10)
    latest = latest_json(store, "fleet/killed/big/latest.json")
    assert latest["snapshot_id"] == first["snapshot_id"]  # the switch never happened
    time.sleep(3)  # several follower polls (refresh_check_interval 1s)
    assert rows(follower) == 1000
    assert status_of(follower, "big").get("last_error") is None

    # what a publisher killed between its data file and its manifest leaves: pruned by the next publish
    with store.open_output_stream("fleet/killed/big/00000000T000000000000Z-killed/part-0.parquet") as out:
        out.write(b"half a snapshot")
    restarted = satchel_server(big_pod("create_only"), pod_dir=pod_dir, env=ENV)  # loads, then publishes
    assert eventually(lambda: latest_json(store, "fleet/killed/big/latest.json")
                      ["snapshot_id"] != first["snapshot_id"], timeout=120)
    assert eventually(lambda: rows(follower) == 3_000_000, timeout=120)
    assert follower.sql("SELECT sum(id) AS s FROM big").json() == [{"s": 3_000_000 * 2_999_999 // 2}]
    assert rows(restarted) == 3_000_000
    left = [i.base_name for i in store.get_file_info(fs.FileSelector("fleet/killed/big"))]
    assert "00000000T000000000000Z-killed" not in left, left


def status_of(server, name: str) -> dict:
    return next(d for d in httpx.get(server.http_url + "/v1/status", timeout=10).json()["datasets"]
                if d["name"] == name)


def test_a_follower_falls_back_to_its_source_when_the_pod_says_so(s3, satchel_server):
    """runtime.snapshots.fallback: source: with no snapshot, or only a stale one, a follower loads
    from its own source and is ready; a fresh snapshot brings it back to following."""
    port, store = s3
    body = lambda mode, **kw: pod(port, mode, **kw).replace("s3://fleet/snapshots", "s3://fleet/fallback").replace(  # noqa: E731
        "    keep: 2\n", "    keep: 2\n    fallback: source\n")
    own = ROWS + "".join(f"{i},own {i}\n" for i in range(501, 511))  # 510 rows: tells its source's data apart
    follower = satchel_server(body("follow", staleness="4s"), files={"items.csv": own}, env=ENV)
    assert count(follower) == 510  # nothing published yet: from its own source, and ready
    assert status(follower)["snapshot"]["serving"] == "source (fallback)"

    publisher = satchel_server(body("create_only"), files={"items.csv": ROWS}, env=ENV)
    assert eventually(lambda: store.get_file_info("fleet/fallback/items/latest.json").type == fs.FileType.File)
    assert eventually(lambda: count(follower) == 500), "the follower did not switch to the fresh snapshot"
    assert status(follower)["snapshot"]["serving"] == "snapshot"

    publisher.stop()  # no newer snapshot comes: past max_staleness the follower reads its source again
    assert eventually(lambda: count(follower) == 510, timeout=30)
    assert httpx.get(follower.http_url + "/v1/ready", timeout=10).status_code == 200
    assert "snapshot is stale" in follower.log()


def test_a_manifest_naming_a_missing_file_is_refused_as_incomplete(s3, tmp_path):
    """The store itself (real S3 API): a snapshot whose data file is absent is 'incomplete', one
    whose file differs is 'corrupt'; both name no credential."""
    import datetime as dt

    import pyarrow as pa

    from engine.errors import ConnectorError
    from engine.refresh.snapshots import SnapshotStore

    port, store = s3
    snaps = SnapshotStore("s3://fleet/store", {"s3_endpoint": f"http://127.0.0.1:{port}", "s3_key": KEY,
                                               "s3_secret": SECRET})
    table = pa.table({"id": list(range(100_000))})
    manifest = snaps.publish("t", table.to_reader(), dt.datetime.now(dt.timezone.utc))
    assert snaps.latest("t") == manifest
    # a read that met latest.json being replaced (here: left cut short until a writer finishes)
    # is read again, not reported as an unreadable manifest
    import threading
    _rewrite(store, "fleet/store/t/latest.json", manifest.to_json()[:50])
    writer = threading.Timer(0.15, _rewrite, args=(store, "fleet/store/t/latest.json", manifest.to_json()))
    writer.start()
    assert snaps.latest("t") == manifest
    writer.join()
    _rewrite(store, "fleet/store/t/latest.json", "{ not json")
    with pytest.raises(ConnectorError, match="unreadable"):
        snaps.latest("t")
    _rewrite(store, "fleet/store/t/latest.json", manifest.to_json())
    (tmp_path / "ok").mkdir()
    files = snaps.download(manifest, tmp_path / "ok")
    import pyarrow.parquet as pq
    assert pq.read_table(files[0]).equals(table)
    store.delete_file(f"fleet/store/t/{manifest.snapshot_id}/part-0.parquet")
    (tmp_path / "gone").mkdir()
    with pytest.raises(ConnectorError, match="incomplete") as err:
        snaps.download(manifest, tmp_path / "gone")
    assert SECRET not in str(err.value) and KEY not in str(err.value)
    with store.open_output_stream(f"fleet/store/t/{manifest.snapshot_id}/part-0.parquet") as out:
        out.write(b"PAR1 half")
    with pytest.raises(ConnectorError, match="corrupt"):
        snaps.download(manifest, tmp_path / "gone")
