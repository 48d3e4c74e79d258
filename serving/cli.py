"""`satchel` command line: run, sql, refresh, validate, datasets, mcp."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from engine.errors import ConfigError, SatchelError, StartupError

DEFAULT_HTTP = "127.0.0.1:8090"
DEFAULT_FLIGHT = "127.0.0.1:50051"
DEFAULT_METRICS = "127.0.0.1:9090"

# Every SATCHEL_* environment variable the program reads: name -> (what it sets, the subcommands
# that read it). The one home for the list; `--help` epilogs are made from it.
ENVIRONMENT: dict[str, tuple[str, tuple[str, ...]]] = {
    "SATCHEL_POD": ("default for --pod", ("run", "validate", "mcp")),
    "SATCHEL_HTTP": ("default for --http", ("run", "refresh", "datasets")),
    "SATCHEL_FLIGHT": ("default for --flight", ("run", "sql")),
    "SATCHEL_METRICS": ("default for --metrics", ("run",)),
    "SATCHEL_DATA_DIR": ("default for --data-dir", ("run", "mcp")),
    "SATCHEL_SHUTDOWN_TIMEOUT": ("default for --shutdown-timeout", ("run",)),
    "SATCHEL_API_KEY": ("default for --api-key", ("sql", "refresh", "datasets")),
    "SATCHEL_LOG_LEVEL": ("log level (DEBUG, INFO, WARNING, ...; default INFO)",
                          ("run", "sql", "refresh", "validate", "mcp", "datasets")),
    "SATCHEL_MEMORY_LIMIT": ("memory budget, overrides runtime.params.memory_limit", ("run", "mcp")),
    "SATCHEL_PLAN_CACHE_SIZE": ("query plans cached (0: off; default 512)", ("run", "mcp")),
    "SATCHEL_PLAN_CACHE_TEXT": ("the cached plans' SQL text, in characters, at most (default 524288)", ("run", "mcp")),
    "SATCHEL_DUCKDB_SLOTS": ("DuckDB queries executing at once (default: the cores)", ("run", "mcp")),
    "SATCHEL_FLIGHT_HANDLE_TTL": ("seconds a Flight SQL result handle lives (default 600)", ("run",)),
}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if hasattr(args, "api_key") and args.api_key is None:
        args.api_key = _env("SATCHEL_API_KEY", None)
    logging.basicConfig(level=(_env("SATCHEL_LOG_LEVEL", "INFO") or "INFO").upper(),
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
    except StartupError as e:
        print(f"satchel: {e.message}", file=sys.stderr)
        return 1
    except SatchelError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _without_pandas() -> None:
    """The sidecar never converts to pandas, yet datafusion imports it (optional to it and to
    pyarrow): refused, the sidecar holds 27 MiB less (anonymous memory on the default pod)."""
    from engine.process_exit import refuse_imports

    refuse_imports("pandas")


def _env(name: str, default: str | None) -> str | None:
    """The value of the SATCHEL_* variable `name` (listed in ENVIRONMENT), else `default`."""
    assert name in ENVIRONMENT, name
    return os.environ.get(name, default)


def _epilog(command: str | None) -> str:
    """The environment variables `command` reads (None: all of them), for --help."""
    lines = [f"  {name:<27} {what}" for name, (what, commands) in ENVIRONMENT.items()
             if command is None or command in commands]
    return "environment variables:\n" + "\n".join(lines)


def version() -> str:
    """The installed package's version (its metadata)."""
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        return dist_version("satchel")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Options with their defaults (unless their help says it); the epilog's lines kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help = action.help or ""
        return help if "(default:" in help else super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="satchel", description="A per-agent sidecar data stack.",
                                epilog=_epilog(None), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"satchel {version()}")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, epilog=_epilog(name),
                              formatter_class=_HelpFormatter)

    run = command("run", "run the sidecar on a spicepod")
    _pod_arg(run)
    run.add_argument("--http", default=_env("SATCHEL_HTTP", DEFAULT_HTTP), help="HTTP bind address")
    run.add_argument("--flight", default=_env("SATCHEL_FLIGHT", DEFAULT_FLIGHT), help="Flight SQL bind address")
    run.add_argument("--metrics", default=_env("SATCHEL_METRICS", DEFAULT_METRICS),
                     help="Prometheus metrics bind address ('off' to disable)")
    run.add_argument("--data-dir", default=_env("SATCHEL_DATA_DIR", None),
                     help="where file-mode accelerators live (default: .satchel next to the pod)")
    run.add_argument("--shutdown-timeout", type=float, default=float(_env("SATCHEL_SHUTDOWN_TIMEOUT", "10") or 10),
                     help="seconds from SIGTERM/SIGINT to exit, whatever is still running (keep it below "
                          "Kubernetes' terminationGracePeriodSeconds)")
    run.set_defaults(func=_run)

    sql = command("sql", "run SQL over Flight SQL (interactive without a query)")
    sql.add_argument("query", nargs="?", help="the SQL to run; omit for an interactive prompt")
    sql.add_argument("--flight", default=_env("SATCHEL_FLIGHT", DEFAULT_FLIGHT), help="Flight SQL address")
    _api_key_arg(sql)
    sql.add_argument("--tls-root-certs", default=None, help="CA file when the server uses TLS")
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format")
    sql.add_argument("--max-rows", type=int, default=1000, help="rows to print in table format")
    sql.set_defaults(func=_sql)

    refresh = command("refresh", "refresh an accelerated dataset now")
    refresh.add_argument("dataset", help="the dataset's name")
    refresh.add_argument("--wait", action="store_true",
                         help="wait until the refresh ends; print its rows and duration, or its error (exit 1)")
    _client_args(refresh)
    refresh.set_defaults(func=_refresh)

    validate = command("validate", "check a spicepod and print every problem")
    _pod_arg(validate)
    validate.add_argument("--connect", action="store_true", help="also check that every source answers")
    validate.add_argument("--timeout", type=float, default=10.0, help="seconds each source has to answer")
    validate.set_defaults(func=_validate)

    mcp = command("mcp", "serve the pod's data over MCP on stdin/stdout")
    _pod_arg(mcp)
    mcp.add_argument("--data-dir", default=_env("SATCHEL_DATA_DIR", None),
                     help="where file-mode accelerators live (default: .satchel next to the pod)")
    mcp.set_defaults(func=_mcp)

    datasets = command("datasets", "list the datasets of a running sidecar")
    _client_args(datasets)
    datasets.set_defaults(func=_datasets)
    return p


def _pod_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pod", default=_env("SATCHEL_POD", "spicepod.yaml"), help="path to spicepod.yaml")


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http", default=_env("SATCHEL_HTTP", DEFAULT_HTTP), help="the sidecar's HTTP address")
    _api_key_arg(p)


def _api_key_arg(p: argparse.ArgumentParser) -> None:
    # never the key itself in --help: the environment is read after parsing
    p.add_argument("--api-key", default=None, help="API key, when the sidecar needs one (default: $SATCHEL_API_KEY)")


def _run(args: argparse.Namespace) -> int:
    _without_pandas()
    from .server import serve

    return serve(args.pod, args.http, args.flight, None if args.metrics == "off" else args.metrics, args.data_dir,
                 args.shutdown_timeout)


def _mcp(args: argparse.Namespace) -> int:
    _without_pandas()
    from .llm.mcp import run_stdio

    return run_stdio(args.pod, args.data_dir)


def _validate(args: argparse.Namespace) -> int:
    from engine.config import load_pod

    from .validate import problems

    pod = load_pod(args.pod)
    found = problems(pod, connect=args.connect, timeout=args.timeout)
    if found:
        raise ConfigError(found)
    checked = "sources answer" if args.connect else "files exist"
    print(f"{args.pod}: ok ({len(pod.datasets)} datasets, {len(pod.views)} views); {checked}")
    return 0


def _sql(args: argparse.Namespace) -> int:
    from .sql_client import interactive, run_one

    if args.query:
        return run_one(args)
    return interactive(args)


def _http(args: argparse.Namespace, method: str, path: str, timeout: float | None = 30):
    import httpx

    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    url = f"http://{args.http}{path}" if "://" not in args.http else f"{args.http}{path}"
    try:
        resp = httpx.request(method, url, headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        raise SatchelError(f"cannot reach the sidecar at {url}: {e}") from None
    body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp.text
    if resp.status_code >= 400:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else body
        raise SatchelError(f"{resp.status_code}: {message}")
    return body


def _refresh(args: argparse.Namespace) -> int:
    if not args.wait:
        print(_http(args, "POST", f"/v1/datasets/{args.dataset}/acceleration/refresh")["message"])
        return 0
    result = _http(args, "POST", f"/v1/datasets/{args.dataset}/acceleration/refresh?wait=true", timeout=None)
    took = f" in {result['duration_s']:.2f}s" if result.get("duration_s") is not None else ""
    if result["status"] == "done":
        print(f"refreshed '{result['dataset']}': {result['rows']:,} rows{took}")
        return 0
    print(f"error: refresh of '{result['dataset']}' failed{took}: {result.get('error')}", file=sys.stderr)
    return 1


def _datasets(args: argparse.Namespace) -> int:
    from .sql_client import print_rows

    listed = _http(args, "GET", "/v1/datasets")
    rows = [{"name": d["name"], "type": d["type"], "status": _status_text(d), "rows": d.get("rows"),
             "accelerated": d.get("engine") or "-", "last refresh": _last_text(d),
             "next refresh": _next_text(d), "description": d.get("description")}
            for d in listed]
    print_rows(rows)
    errors = [(d["name"], d["last_error"]) for d in listed if d.get("last_error")]
    if errors:
        print("\nlast errors:")
        for name, error in errors:
            print(f"  {name}: {error}")
    return 0


def _status_text(dataset: dict) -> str | None:
    """A dataset's status: "error" while it has never loaded and its last attempt failed (it
    retries meanwhile, with rows to show once a retry streams some), load progress while it loads."""
    status, loading = dataset.get("status"), dataset.get("rows_loading")
    if dataset.get("last_error") and not dataset.get("ready"):
        return f"loading ({loading:,} rows so far; the last attempt failed)" if loading else "error"
    if loading is not None:
        size = f", {dataset['bytes_loading'] / 2**20:.1f} MiB" if dataset.get("bytes_loading") else ""
        share = f", {dataset['percent_loaded']}%" if dataset.get("percent_loaded") is not None else ""
        return f"{status} ({loading:,} rows{size}{share} so far)"
    return status


def _last_text(dataset: dict) -> str:
    if not dataset.get("accelerated"):
        return "-"
    took = dataset.get("last_refresh_duration_s")
    return _when(dataset.get("last_refresh_at"), "never") + (f" ({took:.2f}s)" if took is not None else "")


def _next_text(dataset: dict) -> str:
    if not dataset.get("accelerated"):
        return "-"
    if dataset.get("status") in ("loading", "refreshing"):
        return "now"
    return _when(dataset.get("next_refresh_at"), "not scheduled")


def _when(iso: str | None, missing: str) -> str:
    """An ISO time from the sidecar as `YYYY-MM-DD HH:MM:SS UTC`."""
    if not iso:
        return missing
    import datetime as dt

    return dt.datetime.fromisoformat(iso).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


if __name__ == "__main__":
    sys.exit(main())
