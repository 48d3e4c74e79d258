"""A throwaway MongoDB-wire server for the integration tests: mongoeco under Python 3.13.

No mongod can be installed here, so the tests run against `mongoeco` (a MongoDB-wire-compatible
server in Python, pinned below) started as a subprocess on a free 127.0.0.1 port. It needs
Python >= 3.13: a venv with it is built once under ~/.cache/satchel-test/mongoeco-venv (rebuilt
when broken) from pyenv's 3.13 (or `SATCHEL_PY313`).

Data is PRELOADED in the server process through mongoeco's in-process API (wire inserts are
slow): the test process encodes the documents as BSON files, the launcher inserts them before
it starts serving. Authentication is on: user `satchel`, password `MONGO_PASSWORD`, SCRAM-SHA-256
(mongoeco 4.11 fails SCRAM-SHA-1, which pymongo would otherwise pick, so the URI names the mechanism).

Standalone only: mongoeco has no change streams (`$changeStream` is refused), so change-stream
code is tested for its clear error here.

Use: `from tests.integration.mongo_server import mongo_server  # noqa: F401` (session fixture).
"""

from __future__ import annotations

import atexit
import datetime as dt
import decimal
import fcntl
import os
import random
import shutil
import subprocess
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import bson
import pytest
from bson import Decimal128, ObjectId

from tests.processes import start_group, stop_group

MONGOECO = "mongoeco[wire]==4.11.0"
MONGO_USER = "satchel"
MONGO_PASSWORD = "mongo-S3cret-Sh0uld-N3ver-Leak"
DB = "shop"
VENV = Path.home() / ".cache" / "satchel-test" / "mongoeco-venv"

_LAUNCHER = r'''
import asyncio, os, sys
import bson
from mongoeco import AsyncMongoClient
from mongoeco.wire import AsyncMongoEcoProxyServer, WireAuthUser

async def main(data_dir, user, password):
    client = AsyncMongoClient()
    for name in sorted(os.listdir(data_dir)):
        if not name.endswith(".bson"):
            continue
        db, coll = name[:-5].split(".", 1)
        with open(os.path.join(data_dir, name), "rb") as fh:
            docs = bson.decode_all(fh.read())
        if docs:
            await client[db][coll].insert_many(docs)
    users = (WireAuthUser(user, password),)
    server = AsyncMongoEcoProxyServer(client=client, host="127.0.0.1", port=0, auth_users=users)
    address = await server.start()
    print(address.port, flush=True)
    # serve until stdin closes (the test process exited or stopped us)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await server.close()

asyncio.run(main(*sys.argv[1:4]))
'''


def _python313() -> str:
    candidates = [os.environ.get("SATCHEL_PY313", ""), "/root/.pyenv/versions/3.13.0/bin/python"]
    try:
        prefix = subprocess.run(["pyenv", "prefix", "3.13.0"], capture_output=True, text=True, timeout=10).stdout.strip()
        if prefix:
            candidates.insert(1, f"{prefix}/bin/python")
    except (OSError, subprocess.SubprocessError):
        pass
    candidates.append(shutil.which("python3.13") or "")
    for c in candidates:
        if c and Path(c).exists():
            return c
    pytest.fail("the MongoDB tests need Python 3.13 for mongoeco (pyenv install 3.13.0, or set SATCHEL_PY313)",
                pytrace=False)


def _venv_ok() -> bool:
    python = VENV / "bin" / "python"
    if not python.exists():
        return False
    probe = "import mongoeco, bson, mongoeco.wire.proxy; assert mongoeco.__version__ == '4.11.0'"
    return subprocess.run([str(python), "-c", probe], capture_output=True, timeout=60).returncode == 0


def ensure_venv() -> Path:
    """The cached venv's python (built under a file lock: parallel test processes share it)."""
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / "mongoeco-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _venv_ok():
            shutil.rmtree(VENV, ignore_errors=True)
            subprocess.run([_python313(), "-m", "venv", str(VENV)], check=True, capture_output=True)
            result = subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", MONGOECO],
                                    capture_output=True, text=True)
            if result.returncode != 0 or not _venv_ok():
                pytest.fail(f"cannot install {MONGOECO} into {VENV}: {result.stderr[-2000:]}", pytrace=False)
    return VENV / "bin" / "python"


# -- the documents ---------------------------------------------------------------------------

UTC = dt.timezone.utc
ORDERS = 3000
LATE_FROM = 2600  # documents from here on carry a field the 400-document sample never saw
_STATUSES = ["pending", "paid", "shipped", "delivered", "cancelled"]
_CITIES = [("Lisbon", "PT"), ("Porto", "PT"), ("Berlin", "DE"), ("Zürich", "CH"), ("Tokyo", "JP"), ("Austin", "US")]
_SKUS = [f"SKU-{i:03d}" for i in range(40)]


def order_documents(n: int = ORDERS, seed: int = 7) -> list[dict[str, Any]]:
    """Realistic nested orders: customer subdocument, line-item arrays, ObjectId, Decimal128,
    dates, missing and null fields, an int/double field (widens to double), a late field."""
    rng = random.Random(seed)
    start = dt.datetime(2024, 1, 1, tzinfo=UTC)
    docs = []
    for i in range(n):
        city, country = _CITIES[i % len(_CITIES)]
        items = [{"sku": rng.choice(_SKUS), "qty": rng.randint(1, 5),
                  "price": round(rng.uniform(1, 200), 2)} for _ in range(rng.randint(0, 4))]
        total = sum((decimal.Decimal(str(it["price"])) * it["qty"] for it in items), decimal.Decimal(0)).quantize(decimal.Decimal("0.01"))
        doc: dict[str, Any] = {
            "_id": ObjectId(f"{0x65a0_0000 + i:08x}{i:016x}"),
            "order_no": i,
            "status": _STATUSES[i % len(_STATUSES)],
            "total": Decimal128(total),
            "placed_at": start + dt.timedelta(minutes=37 * i, milliseconds=i % 1000),
            "customer": {"name": f"Customer {i % 250}", "email": f"c{i % 250}@example.com", "tier": i % 3,
                         "address": {"city": city, "country": country}},
            "items": items,
            "tags": rng.sample(["gift", "express", "fragile", "bulk"], rng.randint(0, 2)),
            "discount": (i % 7) if i % 2 else (i % 7) + 0.5,  # ints and doubles: a double column
        }
        if i % 10 == 3:
            doc["note"] = None
        elif i % 10 in (1, 5):
            doc["note"] = f"note {i}"
        # else: no note field at all (missing -> NULL)
        if i % 11 == 0:
            del doc["status"]
        if i >= LATE_FROM:
            doc["coupon"] = f"C{i}"
        docs.append(doc)
    return docs


# -- the server --------------------------------------------------------------------------------

@dataclass
class MongoServer:
    port: int
    process: subprocess.Popen
    data_dir: str

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def uri(self, password: str = MONGO_PASSWORD, user: str = MONGO_USER) -> str:
        return (f"mongodb://{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"
                f"@127.0.0.1:{self.port}/?authSource=admin&authMechanism=SCRAM-SHA-256&directConnection=true")

    def params(self, db: str = DB) -> dict[str, str]:
        return {"mongodb_connection_string": self.uri(), "mongodb_db": db}

    def client(self, **kwargs):
        import pymongo
        return pymongo.MongoClient(self.uri(), serverSelectionTimeoutMS=10_000, **kwargs)

    def insert(self, db: str, collection: str, docs: Iterable[Mapping[str, Any]]) -> None:
        """Insert through the wire (fine for small sets; preload big ones)."""
        docs = list(docs)
        with self.client() as c:
            c[db][collection].drop()
            if docs:
                c[db][collection].insert_many(docs)

    def stop(self) -> None:
        """Close the launcher's stdin (it exits at EOF), then stop whatever is left of its group."""
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop_group(self.process)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def start_server(preload: Mapping[tuple[str, str], Iterable[Mapping[str, Any]]]) -> MongoServer:
    """Start mongoeco with `preload` ({(db, collection): documents}) inserted in-process."""
    python = ensure_venv()
    data_dir = tempfile.mkdtemp(prefix="satchel-mongo-")
    for (db, coll), docs in preload.items():
        with open(os.path.join(data_dir, f"{db}.{coll}.bson"), "wb") as fh:
            for doc in docs:
                fh.write(bson.encode(doc))
    launcher = os.path.join(data_dir, "launch.py")
    with open(launcher, "w") as fh:
        fh.write(_LAUNCHER)
    log = open(os.path.join(data_dir, "server.log"), "w")
    process = start_group([str(python), launcher, data_dir, MONGO_USER, MONGO_PASSWORD], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=log, text=True)
    port_line: list[str] = []
    reader = threading.Thread(target=lambda: port_line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(120)
    if not port_line or not port_line[0].strip().isdigit():
        stop_group(process)
        log.close()
        text = Path(data_dir, "server.log").read_text()[-3000:]
        pytest.fail(f"mongoeco did not start: {text}", pytrace=False)
    return MongoServer(int(port_line[0]), process, data_dir)


_SERVER: MongoServer | None = None
_LOCK = threading.Lock()


def mongo() -> MongoServer:
    """One server per test process, with the orders preloaded, stopped at session end (at exit
    at the latest)."""
    global _SERVER
    with _LOCK:
        if _SERVER is None or _SERVER.process.poll() is not None:
            _SERVER = start_server({(DB, "orders"): order_documents()})
            atexit.register(_SERVER.stop)
        return _SERVER


def stop_mongo() -> None:
    global _SERVER
    with _LOCK:
        server, _SERVER = _SERVER, None
    if server is not None:
        server.stop()


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[MongoServer]:
    yield mongo()
    stop_mongo()


__all__ = ["MongoServer", "mongo_server", "mongo", "order_documents", "MONGO_PASSWORD", "DB"]
