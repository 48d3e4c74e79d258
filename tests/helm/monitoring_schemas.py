"""Validate Prometheus Operator objects (PodMonitor, ServiceMonitor) against their schemas.

kubernetes-validate bundles only the core Kubernetes schemas, not CRDs. The npm package
``@kubernetes-models/prometheus-operator`` carries validators generated from the
prometheus-operator Go API (types, enums, required fields, patterns). This module installs
it once under ``<cache>/prometheus-operator-models/<version>`` (``npm install``) and runs a
small Node script that validates the objects given on stdin.

These generated schemas do not forbid unknown fields, so the tests pair them with their own
checks of the fields the chart renders.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

NPM_PACKAGE = "@kubernetes-models/prometheus-operator"
NPM_VERSION = os.environ.get("SATCHEL_PROM_MODELS_NPM_VERSION", "6.0.0")

VALIDATOR_JS = r"""
import { readFileSync } from "node:fs";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const models = { PodMonitor, ServiceMonitor };
const objects = JSON.parse(readFileSync(0, "utf8"));
const results = objects.map((obj) => {
  const Model = models[obj.kind];
  if (!Model) return { error: `no schema for kind ${obj.kind}` };
  if (obj.apiVersion !== "monitoring.coreos.com/v1")
    return { error: `unexpected apiVersion ${obj.apiVersion}` };
  try {
    new Model(obj).validate();
    return { error: null };
  } catch (e) {
    return { error: String(e && e.message ? e.message : e) };
  }
});
process.stdout.write(JSON.stringify(results));
"""


class MonitoringSchemasUnavailable(RuntimeError):
    """node/npm or the schema package could not be had."""


class MonitoringValidator:
    def __init__(self, root: Path):
        self.root = root

    @classmethod
    def install(cls, cache: Path) -> "MonitoringValidator":
        node, npm = shutil.which("node"), shutil.which("npm")
        if node is None or npm is None:
            raise MonitoringSchemasUnavailable(
                "node and npm are needed to validate PodMonitor/ServiceMonitor objects "
                f"against {NPM_PACKAGE}; install Node.js"
            )
        root = cache / "prometheus-operator-models" / NPM_VERSION
        marker = root / "node_modules" / "@kubernetes-models" / "prometheus-operator" / "package.json"
        if not marker.exists():
            root.mkdir(parents=True, exist_ok=True)
            (root / "package.json").write_text(
                json.dumps({"name": "satchel-chart-test-schemas", "private": True, "type": "module"})
            )
            try:
                proc = subprocess.run(
                    [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts",
                     "--loglevel=error", f"{NPM_PACKAGE}@{NPM_VERSION}"],
                    cwd=root, capture_output=True, text=True, timeout=600, check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise MonitoringSchemasUnavailable(f"npm install {NPM_PACKAGE} timed out") from exc
            if proc.returncode != 0 or not marker.exists():
                raise MonitoringSchemasUnavailable(
                    f"npm install {NPM_PACKAGE}@{NPM_VERSION} failed (exit {proc.returncode}): "
                    f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
                )
        (root / "validate.mjs").write_text(VALIDATOR_JS)
        return cls(root)

    def errors(self, objects: list[dict]) -> list[str | None]:
        """One entry per object: None when it validates, else the validator's message."""
        proc = subprocess.run(
            [shutil.which("node") or "node", "validate.mjs"],
            cwd=self.root, input=json.dumps(objects), capture_output=True, text=True,
            timeout=120, check=False,
        )
        if proc.returncode != 0:
            raise MonitoringSchemasUnavailable(f"the schema validator crashed: {proc.stderr[-2000:]}")
        return [r["error"] for r in json.loads(proc.stdout)]
