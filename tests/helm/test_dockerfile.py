"""The container image, checked without a Docker engine: the Dockerfile's structure, its
agreement with the chart and pyproject, the .dockerignore allow-list, and the entrypoint
command run for real the way the image runs it (env-configured listen addresses)."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
CHART_VALUES = yaml.safe_load((REPO / "helm" / "satchel" / "values.yaml").read_text())
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


@dataclass
class Instruction:
    cmd: str
    args: str
    stage: int  # index of the FROM it belongs to; -1 before the first FROM
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped (default `\\` escape)."""
    out: list[Instruction] = []
    stage = -1
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker too
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        cmd, _, args = full.partition(" ")
        cmd = cmd.upper()
        if cmd == "FROM":
            stage += 1
        out.append(Instruction(cmd, args.strip(), stage, start))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return out


INSTRUCTIONS = parse_dockerfile(DOCKERFILE.read_text())
KNOWN = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
         "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


def stages() -> list[list[Instruction]]:
    count = max(i.stage for i in INSTRUCTIONS) + 1
    return [[i for i in INSTRUCTIONS if i.stage == s] for s in range(count)]


def final_stage() -> list[Instruction]:
    return stages()[-1]


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage:
        if ins.cmd == "ENV":
            for word in shlex.split(ins.args):
                key, sep, value = word.partition("=")
                assert sep, f"line {ins.line}: use ENV KEY=VALUE ({word!r})"
                env[key] = value
    return env


def arg_defaults() -> dict[str, str]:
    args = {}
    for ins in INSTRUCTIONS:
        if ins.cmd == "ARG" and "=" in ins.args:
            key, _, value = ins.args.partition("=")
            args[key] = shlex.split(value)[0] if value else ""
    return args


def test_dockerfile_parses_with_known_instructions():
    assert INSTRUCTIONS[0].cmd in ("ARG", "FROM")
    assert {i.cmd for i in INSTRUCTIONS} <= KNOWN
    for ins in INSTRUCTIONS:
        if ins.cmd in ("ENTRYPOINT", "CMD") and ins.args.startswith("["):
            json.loads(ins.args)  # exec form must be valid JSON, or Docker runs it via a shell


def test_multi_stage_build_compiles_llama_cpp_and_ships_no_compilers():
    build, *_, runtime = stages()
    assert len(stages()) >= 2
    froms = [i for i in INSTRUCTIONS if i.cmd == "FROM"]
    args = arg_defaults()
    for f in froms:
        image = f.args.split()[0]
        for key, value in args.items():
            image = image.replace("${" + key + "}", value)
        assert ":" in image and not image.endswith(":latest"), f"unpinned base image {image}"
    assert froms[0].args.split()[-1] == "build" and froms[-1].args.split()[-1] == "runtime"
    build_runs = " ".join(i.args for i in build if i.cmd == "RUN")
    assert "build-essential" in build_runs and "cmake" in build_runs
    assert 'llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}' in build_runs
    assert "CMAKE_ARGS=" in build_runs and "-DGGML_NATIVE=OFF" in args["LLAMA_CMAKE_ARGS"]
    runtime_runs = " ".join(i.args for i in runtime if i.cmd == "RUN")
    for tool in ("build-essential", "cmake", "gcc", "g++", "git "):
        assert tool not in runtime_runs, f"the runtime stage installs {tool}"
    copies = [i.args for i in runtime if i.cmd == "COPY"]
    assert copies == ["--from=build /opt/satchel /opt/satchel"], copies
    assert env_of(runtime)["PATH"].startswith("/opt/satchel/bin:")
    # When the `llm` extra pins llama-cpp-python, the image must build that same version.
    from packaging.requirements import Requirement
    for spec in PYPROJECT["project"].get("optional-dependencies", {}).get("llm", []):
        req = Requirement(spec)
        if req.name == "llama-cpp-python":
            assert req.specifier.contains(args["LLAMA_CPP_PYTHON_VERSION"]), (spec, args)


def test_runtime_user_is_numeric_and_not_root():
    users = [i.args for i in final_stage() if i.cmd == "USER"]
    assert users, "the runtime stage never leaves root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0 and int(gid) != 0
    sc = CHART_VALUES["securityContext"]
    assert (int(uid), int(gid)) == (sc["runAsUser"], sc["runAsGroup"])
    assert CHART_VALUES["podSecurityContext"]["fsGroup"] == int(gid)


def test_entrypoint_is_the_satchel_cli():
    (entrypoint,) = [i for i in final_stage() if i.cmd == "ENTRYPOINT"]
    assert json.loads(entrypoint.args) == ["satchel", "run"]
    assert PYPROJECT["project"]["scripts"]["satchel"] == "serving.cli:main"
    assert not [i for i in final_stage() if i.cmd == "CMD"], "CMD would append arguments to satchel run"


def test_image_env_matches_the_chart():
    env = env_of(final_stage())
    ports = CHART_VALUES["ports"]
    assert env["SATCHEL_HTTP"] == f"0.0.0.0:{ports['http']}"
    assert env["SATCHEL_FLIGHT"] == f"0.0.0.0:{ports['flight']}"
    assert env["SATCHEL_METRICS"] == f"0.0.0.0:{ports['metrics']}"
    assert env["SATCHEL_DATA_DIR"] == CHART_VALUES["persistence"]["mountPath"]
    spicepod = CHART_VALUES["spicepod"]
    assert env["SATCHEL_POD"] == f"{spicepod['mountPath']}/{spicepod['key']}"
    exposed = {int(p) for i in final_stage() if i.cmd == "EXPOSE" for p in i.args.split()}
    assert exposed == set(ports.values())


# ----------------------------------------------------------------------------- .dockerignore


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        patterns.append((negate, pattern.strip("/")))
    return patterns


def _match(pattern: str, path: str) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent directories; `**`
    matches any number of directories."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for candidate in candidates:
        if pattern.startswith("**/"):
            tail = pattern[3:]
            segs = candidate.split("/")
            if any(fnmatch.fnmatchcase("/".join(segs[k:]), tail) for k in range(len(segs))):
                return True
        elif fnmatch.fnmatchcase(candidate, pattern) and candidate.count("/") == pattern.count("/"):
            return True
    return False


def in_build_context(path: str) -> bool:
    included = True
    for negate, pattern in dockerignore_patterns():
        if _match(pattern, path):
            included = negate
    return included


def test_dockerignore_admits_the_package_build_inputs_only():
    packages = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    top_level = sorted({p.rstrip("*").rstrip(".") for p in packages})
    for pkg in top_level:
        assert (REPO / pkg).is_dir(), f"package {pkg} missing"
        for f in (REPO / pkg).rglob("*"):
            rel = f.relative_to(REPO).as_posix()
            if f.is_file():
                wanted = "__pycache__" not in rel and not rel.endswith((".pyc", ".gguf"))
                assert in_build_context(rel) == wanted, rel
    assert in_build_context("pyproject.toml")
    assert in_build_context(PYPROJECT["project"]["readme"])
    for outside in ("tests/helm/test_dockerfile.py", ".git/config", "helm/satchel/Chart.yaml",
                    "bench/run.py", "data/customers.csv", "models/x.gguf", ".env", "Dockerfile",
                    ".venv/bin/python", "spicepod.yaml"):
        assert not in_build_context(outside), outside


# ----------------------------------------------------------------------------- the CLI


def satchel_command() -> list[str]:
    """The `satchel` console script as installed next to this interpreter, or its target."""
    script = Path(sys.executable).with_name("satchel")
    if script.exists():
        return [str(script)]
    module, _, func = PYPROJECT["project"]["scripts"]["satchel"].partition(":")
    return [sys.executable, "-c",
            f"import sys; sys.argv[0] = 'satchel'; from {module} import {func}; sys.exit({func}())"]


def cli_env(env: dict[str, str]) -> dict[str, str]:
    """env with the repository importable (for a checkout that is not pip-installed)."""
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def test_cli_run_accepts_the_flags_the_image_and_chart_rely_on():
    proc = subprocess.run([*satchel_command(), "run", "--help"], capture_output=True, text=True,
                          cwd=REPO, env=cli_env(os.environ), timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for flag in ("--pod", "--http", "--flight", "--metrics"):
        assert flag in proc.stdout, f"`satchel run --help` does not mention {flag}:\n{proc.stdout}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


SMOKE_PODS = {
    "plain": "version: v1\nkind: Spicepod\nname: image_smoke\n",
    # The chart's probes carry no credentials: /health, /v1/ready and /metrics must answer
    # without the API key even when the pod requires one for everything else.
    "api-key": ("version: v1\nkind: Spicepod\nname: image_smoke\nruntime:\n  auth:\n"
                "    api_key:\n      enabled: true\n      keys: ['${secrets:SATCHEL_API_KEY}']\n"),
}


@pytest.mark.parametrize("pod_text", SMOKE_PODS.values(), ids=SMOKE_PODS.keys())
def test_entrypoint_serves_with_the_image_environment(tmp_path, pod_text):
    """Runs `satchel run` with no flags and the image's SATCHEL_* variables (addresses moved
    to free loopback ports), as the container does; /health, /v1/ready and /metrics answer
    without credentials, and SIGTERM (what the kubelet sends) stops it."""
    pod = tmp_path / "pod" / "spicepod.yaml"
    pod.parent.mkdir()
    pod.write_text(pod_text)
    http, flight, metrics = _free_port(), _free_port(), _free_port()
    image_env = env_of(final_stage())
    env = {k: v for k, v in os.environ.items() if not k.startswith("SATCHEL_")}
    env.update({k: v for k, v in image_env.items() if k.startswith("SATCHEL_")})
    env.update({
        "SATCHEL_POD": str(pod),
        "SATCHEL_HTTP": f"127.0.0.1:{http}",
        "SATCHEL_FLIGHT": f"127.0.0.1:{flight}",
        "SATCHEL_METRICS": f"127.0.0.1:{metrics}",
        "SATCHEL_DATA_DIR": str(tmp_path / "data"),
        "SATCHEL_MEMORY_LIMIT": "512Mi",  # as the chart's downward API could pass it
        "SATCHEL_API_KEY": "smoke-test-key",  # read only by the api-key pod
    })
    log = tmp_path / "satchel.log"
    out = log.open("w")
    proc = subprocess.Popen([*satchel_command(), "run"], cwd=tmp_path, env=cli_env(env),
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        status = {}
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = {path: _get(f"http://127.0.0.1:{http}{path}")[0]
                          for path in ("/health", "/v1/ready")}
                status["/metrics"] = _get(f"http://127.0.0.1:{metrics}/metrics")[0]
            except OSError:
                time.sleep(0.3)
                continue
            if all(code == 200 for code in status.values()):
                break
            time.sleep(0.3)
        assert proc.poll() is None, f"satchel run exited ({proc.returncode}):\n{log.read_text()}"
        assert status == {"/health": 200, "/v1/ready": 200, "/metrics": 200}, (status, log.read_text())
        with socket.create_connection(("127.0.0.1", flight), timeout=5):
            pass  # Flight SQL listens on the address from SATCHEL_FLIGHT
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        assert code in (0, -signal.SIGTERM, 128 + signal.SIGTERM), (code, log.read_text())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        out.close()
