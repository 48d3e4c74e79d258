"""Fixtures for the Helm chart tests: a helm binary (fetched if missing), rendering helpers,
the Kubernetes versions to validate at, and the Prometheus Operator schema validator."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHART = REPO / "helm" / "satchel"
AGENT_EXAMPLE = REPO / "helm" / "examples" / "agent-chart"
RELEASE = "orders"
NAMESPACE = "agents"


def _load(name: str, path: Path):
    # --import-mode=importlib puts no test directory on sys.path: load the helpers by path.
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


helm_binary = _load("satchel_tests_helm_binary", HERE / "helm_binary.py")
monitoring_schemas = _load("satchel_tests_monitoring_schemas", HERE / "monitoring_schemas.py")


class HelmError(AssertionError):
    pass


class Helm:
    """Runs one helm binary with its own config/cache dirs; caches renders per argument set."""

    def __init__(self, binary: Path, home: Path):
        self.binary = binary
        self.env = dict(os.environ)
        for var, sub in (("HELM_CONFIG_HOME", "config"), ("HELM_CACHE_HOME", "cache"),
                         ("HELM_DATA_HOME", "data")):
            self.env[var] = str(home / sub)
        self._renders: dict[tuple, list[dict]] = {}

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=self.env,
            timeout=120, check=False,
        )

    @staticmethod
    def _value_args(values=(), sets=(), set_json=(), set_string=()):
        args: list[str] = []
        for f in values:
            args += ["-f", str(f)]
        for s in sets:
            args += ["--set", s]
        for s in set_string:
            args += ["--set-string", s]
        for s in set_json:
            args += ["--set-json", s]
        return args

    def lint(self, chart: Path = CHART, *, kube_version: str | None = None, **value_args):
        args = ["lint", "--strict", str(chart), *self._value_args(**value_args)]
        if kube_version:
            args += ["--kube-version", kube_version]
        return self.run(*args)

    def template_args(self, chart, kube_version, api_versions, value_args):
        args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE,
                *self._value_args(**value_args)]
        if kube_version:
            args += ["--kube-version", kube_version]
        for api in api_versions:
            args += ["--api-versions", api]
        return args

    def template(self, chart: Path = CHART, *, kube_version: str | None = None,
                 api_versions: tuple[str, ...] = (), **value_args) -> list[dict]:
        """Rendered manifests (parsed); raises HelmError with helm's message on failure."""
        key = (str(chart), kube_version, tuple(api_versions),
               tuple((k, tuple(map(str, v))) for k, v in sorted(value_args.items())))
        if key not in self._renders:
            proc = self.run(*self.template_args(chart, kube_version, api_versions, value_args))
            if proc.returncode != 0:
                raise HelmError(f"helm template failed:\n{proc.stderr}")
            if "warning" in proc.stderr.lower():
                raise HelmError(f"helm template warned:\n{proc.stderr}")
            self._renders[key] = [d for d in yaml.safe_load_all(proc.stdout) if d]
        return self._renders[key]

    def template_error(self, chart: Path = CHART, **value_args) -> str:
        """helm's error output for values that must be refused (fails if they render)."""
        proc = self.run(*self.template_args(chart, None, (), value_args))
        if proc.returncode == 0:
            raise HelmError(f"expected helm template to fail for {value_args}, it rendered")
        return proc.stderr


@pytest.fixture(scope="session")
def helm(tmp_path_factory) -> Helm:
    try:
        binary = helm_binary.find_helm()
    except helm_binary.HelmUnavailable as exc:
        pytest.fail(f"the Helm chart tests need a helm binary and none could be had: {exc}",
                    pytrace=False)
    return Helm(binary, tmp_path_factory.mktemp("helm-home"))


def chart_metadata() -> dict:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())


def chart_min_kube_version() -> str:
    """The lowest Kubernetes version Chart.yaml's kubeVersion admits, as X.Y.0."""
    constraint = chart_metadata()["kubeVersion"]
    match = re.fullmatch(r"\s*>=\s*v?(\d+)\.(\d+)(?:\.\d+)?(?:-0)?\s*", constraint)
    assert match, f"kubeVersion {constraint!r} is not a plain '>=X.Y' lower bound"
    return f"{match[1]}.{match[2]}.0"


def bundled_kube_versions() -> list[str]:
    from kubernetes_validate.utils import all_versions
    return all_versions()


@pytest.fixture(scope="session")
def kube_versions() -> list[str]:
    """Versions to validate at: the chart's lowest supported one and the newest bundled."""
    return sorted({chart_min_kube_version(), bundled_kube_versions()[-1]},
                  key=lambda v: tuple(map(int, v.split("."))))


@pytest.fixture(scope="session")
def monitoring_validator():
    try:
        return monitoring_schemas.MonitoringValidator.install(helm_binary.cache_root())
    except monitoring_schemas.MonitoringSchemasUnavailable as exc:
        pytest.fail(f"cannot validate PodMonitor/ServiceMonitor objects: {exc}", pytrace=False)
