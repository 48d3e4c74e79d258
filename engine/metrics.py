"""Prometheus metrics the engine records (serving exposes the registry on the metrics port)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """One registry per runtime, so several runtimes (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queries = Counter("satchel_queries", "Queries run", ["protocol", "served_by"], registry=r)
        self.query_failures = Counter("satchel_query_failures", "Queries and requests that failed or were refused "
                                      "(auth, parsing, planning), by the error code the client got",
                                      ["protocol", "code"], registry=r)
        self.auth_throttled = Counter("satchel_auth_throttled", "Requests refused without checking their API key "
                                      "because their client kept sending wrong keys", ["protocol"], registry=r)
        self.query_duration = Histogram("satchel_query_duration_seconds", "Query duration (to last batch)",
                                        ["protocol"], registry=r)
        self.query_rows = Counter("satchel_query_rows", "Rows returned to clients", ["protocol"], registry=r)
        self.query_bytes = Counter("satchel_query_bytes", "Arrow bytes returned to clients", ["protocol"], registry=r)
        self.refresh_duration = Histogram("satchel_dataset_refresh_duration_seconds", "Dataset refresh duration",
                                          ["dataset"], registry=r)
        self.refresh_errors = Counter("satchel_dataset_refresh_errors", "Failed dataset refreshes", ["dataset"], registry=r)
        self.refresh_last = Gauge("satchel_dataset_last_refresh_timestamp_seconds",
                                  "Unix time of the last successful refresh", ["dataset"], registry=r)
        self.dataset_rows = Gauge("satchel_dataset_rows", "Rows held by the accelerator", ["dataset"], registry=r)
        self.dataset_ready = Gauge("satchel_dataset_ready", "1 when the dataset has loaded once", ["dataset"], registry=r)
        self.snapshot_age = Gauge("satchel_snapshot_age_seconds", "Age of the snapshot a follower serves (from the "
                                  "refresh it holds), at scrape time", ["dataset"], registry=r)
        self.federated_workers_replaced = Counter(
            "satchel_federated_workers_replaced", "Federated engine worker processes killed or lost mid-query, by "
            "reason: stopped (deadline, client gone, shutdown), dropped (result not read to its end), lost (crash, "
            "out-of-memory kill)", ["reason"], registry=r)
        self.model_worker_restarts = Counter("satchel_model_worker_restarts", "Model worker processes that ended "
                                             "unexpectedly (then restarted)", ["model", "reason"], registry=r)
        self.model_worker_up = Gauge("satchel_model_worker_up", "1 while the model's worker process is ready",
                                     ["model"], registry=r)
        self.model_calls = Counter("satchel_model_calls", "Model calls (chat, tool, nsql, ai, embeddings)",
                                   ["model", "principal", "task", "status"], registry=r)
        self.model_tokens = Counter("satchel_model_tokens", "Model tokens", ["model", "principal", "direction"],
                                    registry=r)
        self.model_cost = Counter("satchel_model_cost", "Model cost (tokens times the model's price per 1k tokens)",
                                  ["model", "principal"], registry=r)
