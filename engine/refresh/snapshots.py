"""Acceleration snapshots in S3-compatible object storage: a publisher writes a dataset's
accelerated rows after each refresh; followers start from the newest snapshot and swap to newer
ones, never touching the source (a fleet of sidecars costs the source one load per refresh).

Layout under `runtime.snapshots.location` (s3://bucket/prefix):

    <dataset>/<snapshot id>/part-0.parquet     immutable data
    <dataset>/<snapshot id>/manifest.json      what the snapshot holds (written after the data)
    <dataset>/latest.json                      the newest manifest, written last: the switch

A manifest names its files with size and sha256, the time of the refresh it represents, the row
count and the Arrow schema; a follower checks every file against it before swapping, so a partial
or corrupt snapshot is refused and the last good data kept. The newest `keep` snapshots stay.
Credentials come from `params` (secrets); they never reach manifests, logs or errors.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs

from ..errors import ConfigError, ConnectorError

FORMAT = 1
CHUNK = 1 << 20
PART = 8 << 20  # ranged reads of a download
PARALLEL = 4  # of them at once


@dataclass(frozen=True)
class Manifest:
    dataset: str
    snapshot_id: str
    refreshed_at: str  # ISO 8601, the refresh this snapshot holds
    rows: int
    schema: pa.Schema
    files: tuple[dict, ...]  # {"path", "bytes", "sha256"}

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "dataset": self.dataset, "snapshot_id": self.snapshot_id,
                           "refreshed_at": self.refreshed_at, "rows": self.rows,
                           "schema": base64.b64encode(self.schema.serialize().to_pybytes()).decode(),
                           "files": list(self.files)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        d = json.loads(text)
        if d.get("format") != FORMAT:
            raise ValueError(f"unknown manifest format {d.get('format')!r}")
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(d["schema"])))
        return cls(d["dataset"], d["snapshot_id"], d["refreshed_at"], int(d["rows"]), schema, tuple(d["files"]))

    @property
    def age_s(self) -> float:
        return (dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(self.refreshed_at)).total_seconds()


TORN_READS = 4  # reads of `latest.json` before it counts as unreadable (SnapshotStore.latest)


class SnapshotStore:
    """One pod's snapshot location."""

    def __init__(self, location: str, params: Mapping[str, str], keep: int = 5) -> None:
        if not location.startswith("s3://"):
            raise ConfigError(message=f"runtime.snapshots.location must be s3://bucket/prefix, got {location!r}")
        self.root = location[len("s3://"):].strip("/")
        self.keep = keep
        endpoint = params.get("s3_endpoint")
        kwargs: dict = {"region": params.get("s3_region", "us-east-1")}
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        if params.get("s3_key"):
            kwargs.update(access_key=params["s3_key"], secret_key=params.get("s3_secret", ""))
        else:
            kwargs.update(anonymous=params.get("s3_auth") == "anonymous")
        self.fs = fs.S3FileSystem(**kwargs)

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    # -- publishing --------------------------------------------------------------------------

    def publish(self, dataset: str, reader: pa.RecordBatchReader, refreshed_at: dt.datetime) -> Manifest:
        """Write `reader` as a new snapshot of `dataset`, then its manifest, then `latest.json`;
        drop snapshots past the newest `keep`."""
        snapshot_id = refreshed_at.strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8]
        with tempfile.TemporaryDirectory(prefix="satchel-snapshot-") as tmp:
            local = Path(tmp) / "part-0.parquet"
            rows = 0
            with pq.ParquetWriter(local, reader.schema, compression="zstd") as writer:
                for batch in reader:
                    writer.write_batch(batch)
                    rows += batch.num_rows
            digest, size = _sha256(local)
            remote = self._path(dataset, snapshot_id, "part-0.parquet")
            with open(local, "rb") as src, self.fs.open_output_stream(remote) as out:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
        manifest = Manifest(dataset, snapshot_id, refreshed_at.isoformat(), rows, reader.schema,
                            ({"path": "part-0.parquet", "bytes": size, "sha256": digest},))
        self._write(self._path(dataset, snapshot_id, "manifest.json"), manifest.to_json())
        self._write(self._path(dataset, "latest.json"), manifest.to_json())  # last: the switch
        self._prune(dataset, snapshot_id)
        return manifest

    def _write(self, path: str, text: str) -> None:
        with self.fs.open_output_stream(path) as out:
            out.write(text.encode())

    def _prune(self, dataset: str, newest: str) -> None:
        """Keep the newest `keep` complete snapshots; delete older ones and what a publisher that
        died mid-publish left (an older directory without a manifest). A directory newer than
        `newest` (another publish under way) is never touched."""
        infos = self.fs.get_file_info(fs.FileSelector(self._path(dataset), allow_not_found=True))
        ids = sorted((i.base_name for i in infos if i.type == fs.FileType.Directory), reverse=True)
        manifests = self.fs.get_file_info([self._path(dataset, i, "manifest.json") for i in ids])
        complete = [i for i, m in zip(ids, manifests) if m.type == fs.FileType.File]
        kept = set(complete[:self.keep]) | {newest}
        for old in ids:
            if old < newest and old not in kept:
                self.fs.delete_dir(self._path(dataset, old))

    # -- following ---------------------------------------------------------------------------

    def latest(self, dataset: str) -> Manifest | None:
        """The newest published manifest of `dataset`, or None when there is none yet.

        A read can meet `latest.json` being replaced: the S3 client takes the object's size, then
        its bytes, and gets the new object cut at the old size. Such a torn read is read again
        (a few times, briefly) before the manifest counts as unreadable."""
        for attempt in range(TORN_READS):
            try:
                with self.fs.open_input_stream(self._path(dataset, "latest.json")) as f:
                    text = f.read().decode()
            except FileNotFoundError:
                return None
            try:
                return Manifest.from_json(text)
            except (ValueError, KeyError) as e:
                error = e
                time.sleep(0.1 * (attempt + 1))
        raise ConnectorError(f"dataset '{dataset}': the latest snapshot manifest is unreadable ({error})") from None

    def download(self, manifest: Manifest, into: Path) -> list[Path]:
        """The snapshot's files, each checked against the manifest's size and sha256."""
        out = []
        for entry in manifest.files:
            local = into / entry["path"]
            remote = self._path(manifest.dataset, manifest.snapshot_id, entry["path"])
            try:
                self._fetch(remote, local)
            except FileNotFoundError:
                raise ConnectorError(f"dataset '{manifest.dataset}': snapshot {manifest.snapshot_id} is incomplete "
                                     f"({entry['path']} is missing); keeping the last good data") from None
            digest, size = _sha256(local)
            if digest != entry["sha256"] or size != entry["bytes"]:
                raise ConnectorError(f"dataset '{manifest.dataset}': snapshot {manifest.snapshot_id} is corrupt "
                                     f"({entry['path']}: checksum or size differs from its manifest); keeping the "
                                     f"last good data")
            out.append(local)
        return out


    def _fetch(self, remote: str, local: Path) -> None:
        """Copy one object with PARALLEL ranged reads of PART bytes (several streams at once are
        much faster than one, from S3 as from MinIO)."""
        with self.fs.open_input_file(remote) as src:
            size = src.size()
            with open(local, "wb") as dst:
                dst.truncate(size)
            fd = os.open(local, os.O_WRONLY)
            try:
                def piece(offset: int) -> None:
                    data = src.read_at(min(PART, size - offset), offset)
                    os.pwrite(fd, data, offset)
                with ThreadPoolExecutor(PARALLEL, thread_name_prefix="satchel-snapshot") as pool:
                    list(pool.map(piece, range(0, size, PART)))
            finally:
                os.close(fd)


def _sha256(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size
