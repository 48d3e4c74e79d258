"""Regenerates the demo shop data shipped with the default spicepod (deterministic).

Run: python data/generate.py   (writes the files next to this script)
"""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim",
         "Margaret", "John", "Sophie", "Niklaus", "Katherine", "Dennis", "Lynn", "Guido", "Hedy", "Linus"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman",
        "Berners-Lee", "Hamilton", "McCarthy", "Wilson", "Wirth", "Johnson", "Ritchie", "Conway", "van Rossum"]
COUNTRIES = [("US", "North America"), ("CA", "North America"), ("MX", "North America"), ("BR", "South America"),
             ("GB", "Europe"), ("DE", "Europe"), ("FR", "Europe"), ("NL", "Europe"), ("IN", "Asia"),
             ("JP", "Asia"), ("SG", "Asia"), ("AU", "Oceania"), ("ZA", "Africa"), ("NG", "Africa")]
CATEGORIES = {"books": (8, 60), "electronics": (20, 900), "garden": (5, 250), "kitchen": (4, 300),
              "toys": (3, 120), "outdoor": (10, 700), "office": (2, 150)}
ADJ = ["Compact", "Deluxe", "Eco", "Classic", "Pro", "Mini", "Smart", "Rugged", "Travel", "Family"]
NOUN = {"books": ["Cookbook", "Atlas", "Novel", "Field Guide", "Workbook"],
        "electronics": ["Headphones", "Charger", "Speaker", "Monitor", "Keyboard"],
        "garden": ["Hose", "Planter", "Shears", "Seed Kit", "Trowel"],
        "kitchen": ["Kettle", "Skillet", "Knife Set", "Blender", "Mug"],
        "toys": ["Puzzle", "Robot Kit", "Kite", "Board Game", "Blocks"],
        "outdoor": ["Tent", "Backpack", "Lantern", "Sleeping Bag", "Stove"],
        "office": ["Notebook", "Desk Lamp", "Stapler", "Chair Mat", "Planner"]}
STATUSES = ["delivered"] * 14 + ["shipped"] * 3 + ["processing"] * 2 + ["cancelled", "returned"]


def customers(rng: random.Random, n: int = 1200) -> pa.Table:
    rows = {"customer_id": [], "name": [], "email": [], "country": [], "region": [], "signup_date": [], "segment": []}
    start = dt.date(2021, 1, 1)
    for i in range(1, n + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        country, region = rng.choice(COUNTRIES)
        rows["customer_id"].append(i)
        rows["name"].append(f"{first} {last}")
        rows["email"].append(f"{first}.{last}{i}@example.com".lower().replace(" ", ""))
        rows["country"].append(country)
        rows["region"].append(region)
        rows["signup_date"].append(start + dt.timedelta(days=rng.randrange(0, 1400)))
        rows["segment"].append(rng.choices(["consumer", "small_business", "enterprise"], [70, 22, 8])[0])
    return pa.table(rows)


def products(rng: random.Random) -> list[dict]:
    out, pid = [], 1
    for cat, (lo, hi) in CATEGORIES.items():
        for noun in NOUN[cat]:
            for adj in rng.sample(ADJ, 4):
                price = Decimal(rng.randrange(lo * 100, hi * 100)) / 100
                out.append({"product_id": pid, "name": f"{adj} {noun}", "category": cat,
                            "unit_price": float(price), "in_stock": rng.random() > 0.1,
                            "tags": sorted(rng.sample(["gift", "new", "sale", "bestseller", "eco"], rng.randrange(0, 3)))})
                pid += 1
    return out


def orders(rng: random.Random, n_customers: int, prods: list[dict], n: int = 6000) -> pa.Table:
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    cols: dict[str, list] = {k: [] for k in ["order_id", "customer_id", "product_id", "quantity", "unit_price",
                                             "discount", "amount", "status", "ordered_at", "shipped_at"]}
    for i in range(1, n + 1):
        p = rng.choice(prods)
        qty = rng.choices([1, 2, 3, 4, 5, 10], [60, 20, 8, 5, 4, 3])[0]
        price = Decimal(str(p["unit_price"])).quantize(Decimal("0.01"))
        disc = rng.choices([Decimal("0"), Decimal("0.05"), Decimal("0.10"), Decimal("0.20")], [70, 15, 10, 5])[0]
        ordered = start + dt.timedelta(minutes=rng.randrange(0, 60 * 24 * 640))
        status = rng.choice(STATUSES)
        shipped = None if status in ("processing", "cancelled") else ordered + dt.timedelta(hours=rng.randrange(6, 120))
        cols["order_id"].append(100000 + i)
        cols["customer_id"].append(rng.randrange(1, n_customers + 1))
        cols["product_id"].append(p["product_id"])
        cols["quantity"].append(qty)
        cols["unit_price"].append(price)
        cols["discount"].append(disc)
        cols["amount"].append((price * qty * (1 - disc)).quantize(Decimal("0.01")))
        cols["status"].append(status)
        cols["ordered_at"].append(ordered)
        cols["shipped_at"].append(shipped)
    money = pa.decimal128(12, 2)
    schema = pa.schema([("order_id", pa.int64()), ("customer_id", pa.int32()), ("product_id", pa.int32()),
                        ("quantity", pa.int16()), ("unit_price", money), ("discount", pa.decimal128(4, 2)),
                        ("amount", money), ("status", pa.string()), ("ordered_at", pa.timestamp("us", "UTC")),
                        ("shipped_at", pa.timestamp("us", "UTC"))])
    return pa.table(cols, schema=schema)


def main() -> None:
    rng = random.Random(20261121)
    cust = customers(rng)
    prods = products(rng)
    ords = orders(rng, cust.num_rows, prods)
    pacsv.write_csv(cust, HERE / "customers.csv")
    with open(HERE / "products.ndjson", "w") as f:
        for p in prods:
            f.write(json.dumps(p) + "\n")
    # Orders are split in monthly-ish parts to exercise directory scans.
    (HERE / "orders").mkdir(exist_ok=True)
    for old in (HERE / "orders").glob("*.parquet"):
        old.unlink()
    half = ords.num_rows // 2
    pq.write_table(ords.slice(0, half), HERE / "orders" / "part-0.parquet", row_group_size=1000)
    pq.write_table(ords.slice(half), HERE / "orders" / "part-1.parquet", row_group_size=1000)


if __name__ == "__main__":
    main()
