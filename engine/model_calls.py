"""The cost of model calls: every task-history row that names a model (chat, tool, nsql, ai(),
embeddings, search embeddings) is priced from the model's `price_per_1k_input_tokens` /
`price_per_1k_output_tokens` params and counted in Prometheus per model and principal."""

from __future__ import annotations

from collections.abc import Mapping

from .metrics import Metrics
from .task_history import Task


class ModelCallLog:
    """A task-history observer: fills `cost` and counts tokens, cost and calls."""

    def __init__(self, prices: Mapping[str, tuple[float, float]], metrics: Metrics) -> None:
        self.prices = dict(prices)
        self.metrics = metrics

    def __call__(self, task: Task) -> None:
        if task.model is None:
            return
        tokens_in, tokens_out = task.input_tokens or 0, task.output_tokens or 0
        price_in, price_out = self.prices.get(task.model, (0.0, 0.0))
        if task.input_tokens is not None or task.output_tokens is not None:
            task.cost = (tokens_in * price_in + tokens_out * price_out) / 1000
        who = task.principal or "anonymous"
        m = self.metrics
        m.model_calls.labels(task.model, who, task.task, "error" if task.error_code or task.error else "ok").inc()
        if tokens_in:
            m.model_tokens.labels(task.model, who, "input").inc(tokens_in)
        if tokens_out:
            m.model_tokens.labels(task.model, who, "output").inc(tokens_out)
        if task.cost:
            m.model_cost.labels(task.model, who).inc(task.cost)
