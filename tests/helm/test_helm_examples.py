"""The values files in helm/examples/: each lints strictly, renders, and its spicepod loads
(params checked by Satchel's own loader, so an example cannot drift from the connectors)."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine.config import load_pod_text
from engine.refresh.dataset import connector_for

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "helm" / "examples").glob("*-values.yaml"))


@pytest.mark.parametrize("values", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_values_lint_render_and_load(helm, values: Path) -> None:
    proc = helm.lint(values=[values])
    assert proc.returncode == 0 and "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout
    docs = helm.template(values=[values])
    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and "spicepod.yaml" in d.get("data", {})]
    pod = load_pod_text(config["data"]["spicepod.yaml"], env={})
    assert pod.datasets
    for dataset in pod.datasets:  # built, not connected: unknown or bad params fail here
        connector_for(dataset, "/etc/satchel/pod").close()
    if values.name.startswith("sail"):
        assert {d.connector_prefix for d in pod.datasets} == {"flightsql"}
        assert all(d.params["flightsql_dialect"] == "spark" for d in pod.datasets)
