"""`GET /`: one self-contained HTML page (no external assets: it works offline) showing the
sidecar as the caller may see it: datasets, models, recent queries and refreshes, and a chart of
their durations. Every value is escaped."""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any, Iterable, Sequence

from engine.auth import Principal
from engine.runtime import Runtime

RECENT = 50  # task-history rows shown per table
CHART_POINTS = 200

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:12px 24px}header h1{margin:0;font-size:18px}
header span{opacity:.75;margin-left:12px}main{padding:16px 24px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin:0 0 16px;padding:12px 16px}
h2{font-size:15px;margin:0 0 8px}table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eef0f3;vertical-align:top}
th{font-weight:600;color:#555}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#17803d}.bad{color:#b42318}.muted{color:#777}details summary{cursor:pointer}
code{font-size:12px}svg{background:#fbfcfd;border:1px solid #eef0f3}
"""


def render(runtime: Runtime, models: Any, principal: Principal) -> str:
    """The page for `principal`: its datasets and its task history only."""
    status = runtime.status()
    visible = [d for d in status["datasets"] if runtime.visible(d["name"], principal)]
    tables = {t.name: t for t in runtime.tables(principal) if t.schema == "public"}
    tasks = _recent(runtime, principal)
    queries = [t for t in tasks if t["task"] == "query"]
    refreshes = [t for t in tasks if t["task"] == "refresh"]
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{escape(status['pod'])} · satchel</title><style>{_STYLE}</style></head><body>",
        f"<header><h1>satchel · {escape(status['pod'])}</h1>",
        f"<span>{'ready' if status['ready'] else 'loading'}</span>",
        f"<span>as {escape(principal.name)}</span></header><main>",
        _datasets(visible, tables),
        _models(models.status() if models is not None else []),
        _chart(queries, refreshes),
        _tasks("Recent queries", queries, ("started_at", "duration_ms", "served_by", "rows", "principal", "query_text",
                                           "error")),
        _tasks("Refresh history", refreshes, ("started_at", "duration_ms", "datasets", "rows", "error")),
        "</main></body></html>",
    ]
    return "".join(parts)


def _recent(runtime: Runtime, principal: Principal) -> list[dict]:
    """Newest task-history rows, through the caller's own query path (its policy applies)."""
    reader = runtime.query("SELECT task, started_at, duration_ms, served_by, rows, principal, query_text, "
                           "datasets, error FROM runtime.task_history WHERE task IN ('query', 'refresh') "
                           f"ORDER BY task_id DESC LIMIT {CHART_POINTS}", principal, protocol="http")
    return reader.read_all().to_pylist()


def _cell(value: object) -> str:
    if value is None:
        return "<td class=muted>-</td>"
    if isinstance(value, float):
        return f"<td class=num>{value:,.1f}</td>"
    if isinstance(value, int):
        return f"<td class=num>{value:,}</td>"
    if isinstance(value, dt.datetime):
        return f"<td>{escape(value.strftime('%Y-%m-%d %H:%M:%S'))}</td>"
    if isinstance(value, list):
        value = ", ".join(map(str, value))
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == "T":
        try:  # an ISO timestamp from the status: shown like the others
            return _cell(dt.datetime.fromisoformat(value))
        except ValueError:
            pass
    text = str(value)
    short = text if len(text) <= 160 else text[:157] + "..."
    return f"<td title=\"{escape(text)}\">{escape(short)}</td>"


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _datasets(datasets: list[dict], tables: dict) -> str:
    rows = []
    for d in datasets:
        state = d["status"] if not d.get("last_error") or d.get("ready") else "error"
        cls = "ok" if d.get("ready") and not d.get("last_error") else "bad" if d.get("last_error") else "muted"
        info = tables.get(d["name"])
        columns = "".join(
            f"<tr><td><code>{escape(f.name)}</code></td><td>{escape(str(f.type))}</td>"
            f"<td>{escape((f.metadata or {}).get(b'description', b'').decode())}"
            f"{' (masked: ' + escape((f.metadata or {})[b'masked'].decode()) + ')' if b'masked' in (f.metadata or {}) else ''}"
            f"</td></tr>" for f in (info.arrow_schema if info else []))
        rows.append(
            f"<tr><td><details><summary><b>{escape(d['name'])}</b></summary><table>{columns}</table></details></td>"
            f"<td class={cls}>{escape(state)}</td>{_cell(d.get('rows'))}{_cell(d.get('engine') or 'live')}"
            f"{_cell(d.get('last_refresh_at'))}{_cell(d.get('next_refresh_at'))}{_cell(d.get('last_error'))}"
            f"{_cell(d.get('description'))}</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("dataset", "status", "rows", "engine", "last refresh", "next refresh",
                                            "last error", "description"))
    return f"<section id=datasets><h2>Datasets</h2><table><tr>{head}</tr>{''.join(rows)}</table></section>"


def _models(models: list[dict]) -> str:
    if not models:
        return "<section id=models><h2>Models</h2><p class=muted>No models in this pod.</p></section>"
    rows = [(m.get("name"), m.get("status"), m.get("type"), m.get("restarts"), m.get("error") or m.get("last_crash"))
            for m in models]
    return f"<section id=models><h2>Models</h2>{_table(('model', 'status', 'type', 'restarts', 'last error'), rows)}</section>"


def _tasks(title: str, tasks: list[dict], keys: Sequence[str]) -> str:
    rows = [[t.get(k) for k in keys] for t in tasks[:RECENT]]
    empty = "" if rows else "<p class=muted>None yet.</p>"
    return f"<section><h2>{escape(title)}</h2>{_table([k.replace('_', ' ') for k in keys], rows)}{empty}</section>"


def _chart(queries: list[dict], refreshes: list[dict], width: int = 900, height: int = 160) -> str:
    """Query latency (line) and refresh durations (dots) over time, in milliseconds, log scale."""
    import math

    points = [(t["started_at"], t["duration_ms"], kind) for kind, ts in (("query", queries), ("refresh", refreshes))
              for t in ts if t.get("started_at") and t.get("duration_ms") is not None]
    if len(points) < 2:
        return "<section id=chart><h2>Latency</h2><p class=muted>Not enough history yet.</p></section>"
    t0 = min(p[0] for p in points).timestamp()
    span = max(max(p[0] for p in points).timestamp() - t0, 1e-3)
    top = math.log10(max(max(p[1] for p in points), 1.0) * 1.2)

    def xy(when: dt.datetime, ms: float) -> tuple[float, float]:
        y = math.log10(max(ms, 0.1) + 1) / max(top, 1e-3)
        return 40 + (when.timestamp() - t0) / span * (width - 50), height - 20 - min(y, 1.0) * (height - 30)

    line = " ".join("%.1f,%.1f" % xy(w, ms) for w, ms, kind in sorted(points) if kind == "query")
    dots = "".join('<circle cx="%.1f" cy="%.1f" r="3" fill="#d97706"/>' % xy(w, ms)
                   for w, ms, kind in points if kind == "refresh")
    slowest = max(p[1] for p in points)
    return (f"<section id=chart><h2>Latency</h2><svg role=img aria-label=\"query latency and refresh durations\" "
            f"width={width} height={height} viewBox=\"0 0 {width} {height}\">"
            f"<polyline fill=none stroke=\"#2563eb\" stroke-width=1.5 points=\"{line}\"/>{dots}"
            f"<text x=4 y=14 font-size=11 fill=#555>{slowest:,.0f} ms</text>"
            f"<text x=4 y={height - 6} font-size=11 fill=#555>0 ms</text></svg>"
            f"<p class=muted>Blue: query latency; orange: refresh durations (log scale, last {CHART_POINTS} "
            f"tasks).</p></section>")
