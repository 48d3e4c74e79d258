"""`satchel` command line: run, sql, refresh, validate, datasets, mcp."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from engine.errors import ConfigError, SatchelError

DEFAULT_HTTP = "127.0.0.1:8090"
DEFAULT_FLIGHT = "127.0.0.1:50051"
DEFAULT_METRICS = "127.0.0.1:9090"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("SATCHEL_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request the CLI makes
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `satchel sql ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
        return 0
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    except SatchelError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="satchel", description="A per-agent sidecar data stack.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the sidecar on a spicepod")
    _pod_arg(run)
    run.add_argument("--http", default=os.environ.get("SATCHEL_HTTP", DEFAULT_HTTP), help="HTTP bind address")
    run.add_argument("--flight", default=os.environ.get("SATCHEL_FLIGHT", DEFAULT_FLIGHT), help="Flight SQL bind address")
    run.add_argument("--metrics", default=os.environ.get("SATCHEL_METRICS", DEFAULT_METRICS),
                     help="Prometheus metrics bind address ('off' to disable)")
    run.add_argument("--data-dir", default=os.environ.get("SATCHEL_DATA_DIR"), help="where file-mode accelerators live")
    run.add_argument("--shutdown-timeout", type=float, default=float(os.environ.get("SATCHEL_SHUTDOWN_TIMEOUT", "10")),
                     help="seconds from SIGTERM/SIGINT to exit, whatever is still running (keep it below "
                          "Kubernetes' terminationGracePeriodSeconds)")
    run.set_defaults(func=_run)

    sql = sub.add_parser("sql", help="run SQL over Flight SQL (interactive without a query)")
    sql.add_argument("query", nargs="?", help="the SQL to run; omit for an interactive prompt")
    sql.add_argument("--flight", default=os.environ.get("SATCHEL_FLIGHT", DEFAULT_FLIGHT))
    sql.add_argument("--api-key", default=os.environ.get("SATCHEL_API_KEY"))
    sql.add_argument("--tls-root-certs", default=None, help="CA file when the server uses TLS")
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table")
    sql.add_argument("--max-rows", type=int, default=1000, help="rows to print in table format")
    sql.set_defaults(func=_sql)

    refresh = sub.add_parser("refresh", help="refresh an accelerated dataset now")
    refresh.add_argument("dataset")
    _client_args(refresh)
    refresh.set_defaults(func=_refresh)

    validate = sub.add_parser("validate", help="check a spicepod and print every problem")
    _pod_arg(validate)
    validate.set_defaults(func=_validate)

    mcp = sub.add_parser("mcp", help="serve the pod's data over MCP on stdin/stdout")
    _pod_arg(mcp)
    mcp.add_argument("--data-dir", default=os.environ.get("SATCHEL_DATA_DIR"))
    mcp.set_defaults(func=_mcp)

    datasets = sub.add_parser("datasets", help="list the datasets of a running sidecar")
    _client_args(datasets)
    datasets.set_defaults(func=_datasets)
    return p


def _pod_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pod", default=os.environ.get("SATCHEL_POD", "spicepod.yaml"), help="path to spicepod.yaml")


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http", default=os.environ.get("SATCHEL_HTTP", DEFAULT_HTTP))
    p.add_argument("--api-key", default=os.environ.get("SATCHEL_API_KEY"))


def _run(args: argparse.Namespace) -> int:
    from .server import serve

    return serve(args.pod, args.http, args.flight, None if args.metrics == "off" else args.metrics, args.data_dir,
                 args.shutdown_timeout)


def _mcp(args: argparse.Namespace) -> int:
    from .llm.mcp import run_stdio

    return run_stdio(args.pod, args.data_dir)


def _validate(args: argparse.Namespace) -> int:
    from engine.config import load_pod

    pod = load_pod(args.pod)
    print(f"{args.pod}: ok ({len(pod.datasets)} datasets, {len(pod.views)} views)")
    return 0


def _sql(args: argparse.Namespace) -> int:
    from .sql_client import interactive, run_one

    if args.query:
        return run_one(args)
    return interactive(args)


def _http(args: argparse.Namespace, method: str, path: str):
    import httpx

    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    url = f"http://{args.http}{path}" if "://" not in args.http else f"{args.http}{path}"
    try:
        resp = httpx.request(method, url, headers=headers, timeout=30)
    except httpx.HTTPError as e:
        raise SatchelError(f"cannot reach the sidecar at {url}: {e}") from None
    body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp.text
    if resp.status_code >= 400:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else body
        raise SatchelError(f"{resp.status_code}: {message}")
    return body


def _refresh(args: argparse.Namespace) -> int:
    print(_http(args, "POST", f"/v1/datasets/{args.dataset}/acceleration/refresh")["message"])
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from .sql_client import print_rows

    rows = [{"name": d["name"], "type": d["type"], "status": _status_text(d), "rows": d.get("rows"),
             "accelerated": d.get("engine") or "-", "description": d.get("description")}
            for d in _http(args, "GET", "/v1/datasets")]
    print_rows(rows)
    return 0




def _status_text(dataset: dict) -> str | None:
    """A dataset's status, with load progress while it loads."""
    status = dataset.get("status")
    if dataset.get("rows_loading") is not None:
        return f"{status} ({dataset['rows_loading']:,} rows so far)"
    return status


if __name__ == "__main__":
    sys.exit(main())
