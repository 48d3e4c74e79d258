"""The Helm chart (helm/satchel): lint, render over the values matrix in helm/satchel/ci/,
validate every manifest against the Kubernetes schemas, and assert what the chart promises."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "satchel"
AGENT_EXAMPLE = REPO / "helm" / "examples" / "agent-chart"
MATRIX = sorted(CHART.glob("ci/*-values.yaml"))
MONITORING_API = ("monitoring.coreos.com/v1",)
SECRETISH = re.compile(r"(?i)(pass|password|secret|token|api_?key|private_?key|access_?key|credential)")


def values_of(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def chart_defaults() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def merged_values(path: Path | None) -> dict:
    """values.yaml overlaid with a values file (Helm's deep merge of maps)."""
    def merge(base, over):
        if isinstance(base, dict) and isinstance(over, dict):
            out = dict(base)
            for k, v in over.items():
                out[k] = merge(base.get(k), v) if k in base else v
            return out
        return over
    return merge(chart_defaults(), values_of(path) if path else {})


def ids(paths):
    return [p.name.removesuffix("-values.yaml") for p in paths]


def kinds(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def only(docs, kind):
    found = kinds(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def pod_spec(deployment):
    return deployment["spec"]["template"]["spec"]


def satchel_container(spec) -> tuple[dict, bool]:
    """(the Satchel container, whether it is an init container)."""
    for c in spec.get("initContainers", []):
        if c["name"] == "satchel":
            return c, True
    for c in spec["containers"]:
        if c["name"] == "satchel":
            return c, False
    raise AssertionError("no container named satchel in the pod")


def env_map(container):
    return {e["name"]: e for e in container.get("env", [])}


def named_port(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p["name"] == port:
            return p["containerPort"]
    raise AssertionError(f"probe port {port!r} is not a port of container {container['name']}")


def render_matrix(helm, path, **kw):
    return helm.template(values=[path], api_versions=MONITORING_API, **kw)


# ----------------------------------------------------------------------------- versions


def test_chart_claims_a_kubernetes_version_with_native_sidecars(kube_versions):
    lowest = kube_versions[0]
    major, minor, _ = map(int, lowest.split("."))
    assert (major, minor) >= (1, 29), "native sidecars (restartPolicy: Always) need Kubernetes >= 1.29"
    from kubernetes_validate.utils import all_versions
    assert lowest in all_versions(), (
        f"kubernetes-validate {kubernetes_validate.__version__} bundles no {lowest} schemas "
        f"(has {all_versions()}); upgrade it"
    )


def test_kubernetes_older_than_the_claim_is_refused(helm, kube_versions):
    major, minor, _ = map(int, kube_versions[0].split("."))
    proc = helm.run("template", "x", str(CHART), "--kube-version", f"{major}.{minor - 1}.0")
    assert proc.returncode != 0 and "incompatible with Kubernetes" in proc.stderr, proc.stderr


# ----------------------------------------------------------------------------- lint


@pytest.mark.parametrize("values", [None, *MATRIX], ids=["chart-defaults", *ids(MATRIX)])
def test_helm_lint_strict(helm, kube_versions, values):
    for version in kube_versions:
        proc = helm.lint(values=[values] if values else [], kube_version=version)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    "sets, complaint",
    [
        (["image.tga=1.0"], "Additional property tga is not allowed"),
        (["replicas=3"], "Additional property replicas is not allowed"),
        (["probes.readines.enabled=false"], "Additional property readines is not allowed"),
        (["persistence.pvc.sizee=1Gi"], "Additional property sizee is not allowed"),
        (["mode=sidecars"], "mode must be one of the following"),
        (["service.type=LoadBalancers"], "service.type must be one of the following"),
        (["image.tag=latest"], "image.tag: Must not validate the schema"),
        (["agent.image.tag=latest"], "agent.image.tag: Must not validate the schema"),
        (["ports.http=0"], "ports.http: Must be greater than or equal to 1"),
        (["persistence.type=hostPath"], "persistence.type must be one of the following"),
    ],
)
def test_lint_rejects_typos_and_bad_values(helm, sets, complaint):
    proc = helm.lint(sets=sets)
    assert proc.returncode != 0, f"helm lint accepted {sets}"
    assert complaint in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_values_schema_is_valid_and_accepts_the_defaults_and_the_matrix():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    for path in [None, *MATRIX]:
        # Helm drops null values before validating; mirror that.
        def strip_nulls(x):
            if isinstance(x, dict):
                return {k: strip_nulls(v) for k, v in x.items() if v is not None}
            return [strip_nulls(v) for v in x] if isinstance(x, list) else x
        errors = list(validator.iter_errors(strip_nulls(merged_values(path))))
        assert not errors, f"{path}: {[e.message for e in errors]}"


# ----------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("values", MATRIX, ids=ids(MATRIX))
def test_every_manifest_validates_strictly(helm, kube_versions, monitoring_validator, values):
    for version in kube_versions:
        docs = render_matrix(helm, values, kube_version=version)
        assert docs, "nothing rendered"
        monitors = []
        for doc in docs:
            if doc["apiVersion"].startswith("monitoring.coreos.com/"):
                monitors.append(doc)
                continue
            used = kubernetes_validate.validate(doc, version, strict=True)
            assert used == version.rsplit(".", 1)[0], (
                f"{doc['kind']} validated against {used} schemas, not {version}")
        if monitors:
            errors = monitoring_validator.errors(monitors)
            assert errors == [None] * len(monitors), list(zip([m["kind"] for m in monitors], errors, strict=True))


def test_strict_validation_catches_an_unknown_field(helm, kube_versions):
    # Guards the test above: the validator really is strict on the rendered shape.
    doc = copy.deepcopy(only(render_matrix(helm, MATRIX[0]), "Deployment"))
    pod_spec(doc)["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, kube_versions[0], strict=True)


def test_monitoring_validator_catches_a_bad_monitor(helm, monitoring_validator):
    docs = render_matrix(helm, CHART / "ci" / "monitoring-values.yaml")
    bad = copy.deepcopy(only(docs, "ServiceMonitor"))
    bad["spec"]["endpoints"][0]["interval"] = 30
    assert monitoring_validator.errors([bad])[0], "an integer interval passed the schema"


# ----------------------------------------------------------------------------- workloads


@pytest.mark.parametrize("values", MATRIX, ids=ids(MATRIX))
def test_probes_point_at_health_and_ready(helm, values):
    v = merged_values(values)
    tls = v["tls"]["enabled"]
    deployment = only(render_matrix(helm, values), "Deployment")
    container, _ = satchel_container(pod_spec(deployment))
    expected = {"startupProbe": "/health", "livenessProbe": "/health", "readinessProbe": "/v1/ready"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, (probe, get)
        assert named_port(container, get["port"]) == v["ports"]["http"], (probe, get)
        assert get.get("scheme", "HTTP") == ("HTTPS" if tls else "HTTP"), (probe, get)
    startup = container["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget >= 600, f"startup probe allows only {budget}s for the initial load"


def test_probes_are_fully_overridable(helm):
    docs = helm.template(set_json=[
        'probes.liveness={"enabled":true,"httpGet":null,"tcpSocket":{"port":"satchel-http"},"periodSeconds":20}',
        'probes.startup={"enabled":false}',
    ], sets=["probes.readiness.timeoutSeconds=9"])
    container, _ = satchel_container(pod_spec(only(docs, "Deployment")))
    assert container["livenessProbe"] == {"tcpSocket": {"port": "satchel-http"}, "periodSeconds": 20,
                                          "timeoutSeconds": 3, "failureThreshold": 3}
    assert "startupProbe" not in container
    assert container["readinessProbe"]["timeoutSeconds"] == 9
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/ready"


@pytest.mark.parametrize("values", MATRIX, ids=ids(MATRIX))
def test_sidecar_mode_is_a_native_sidecar_and_standalone_is_not(helm, values):
    v = merged_values(values)
    docs = render_matrix(helm, values)
    spec = pod_spec(only(docs, "Deployment"))
    container, is_init = satchel_container(spec)
    if v["mode"] == "sidecar":
        assert is_init and spec["initContainers"][0] is container, "satchel must be the first init container"
        assert container["restartPolicy"] == "Always"
        assert [c["name"] for c in spec["containers"]] == [v["agent"]["name"]]
        agent_env = env_map(spec["containers"][0])
        scheme = "https" if v["tls"]["enabled"] else "http"
        assert agent_env["SATCHEL_URL"]["value"] == f"{scheme}://127.0.0.1:{v['ports']['http']}"
        assert kinds(docs, "Service") == [], "sidecar mode renders no Service"
    else:
        assert not is_init and "restartPolicy" not in container
        assert "initContainers" not in spec
        service = only(docs, "Service")
        assert service["spec"]["type"] == "ClusterIP"


@pytest.mark.parametrize("values", MATRIX, ids=ids(MATRIX))
def test_image_tags_are_pinned_never_latest(helm, values):
    v = merged_values(values)
    spec = pod_spec(only(render_matrix(helm, values), "Deployment"))
    for c in spec.get("initContainers", []) + spec["containers"]:
        ref = c["image"]
        name, _, tag = ref.split("@")[0].rpartition(":")
        assert name and tag and "/" not in tag, f"{c['name']}: {ref} has no tag"
        assert tag != "latest", ref
    container, _ = satchel_container(spec)
    expected_tag = v["image"]["tag"] or yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container["image"] == f"{v['image']['repository']}:{expected_tag}"


def test_image_digest_pins_the_image(helm):
    digest = "sha256:" + "ab" * 32
    docs = helm.template(sets=[f"image.digest={digest}"])
    container, _ = satchel_container(pod_spec(only(docs, "Deployment")))
    assert container["image"].endswith(f":0.1.0@{digest}")


@pytest.mark.parametrize("values", MATRIX, ids=ids(MATRIX))
def test_security_context_is_restricted(helm, values):
    docs = render_matrix(helm, values)
    spec = pod_spec(only(docs, "Deployment"))
    container, _ = satchel_container(spec)
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0 and sc["runAsGroup"] != 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # Every container of the pod (the agent's too) is kept to the restricted profile.
    for c in spec.get("initContainers", []) + spec["containers"]:
        csc = c.get("securityContext", {})
        assert csc.get("allowPrivilegeEscalation") is False, c["name"]
        assert csc.get("capabilities", {}).get("drop") == ["ALL"], c["name"]
    # A read-only root filesystem needs writable /tmp and data dir volumes.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {vol["name"]: vol for vol in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    data_dir = env_map(container)["SATCHEL_DATA_DIR"]["value"]
    assert not mounts[data_dir].get("readOnly", False)
    # The ServiceAccount token stays out of the pod unless asked for.
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    for sa in kinds(docs, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False
        assert sa["metadata"]["name"] == spec["serviceAccountName"]


def test_image_user_matches_the_chart_user():
    # The chart's runAsUser must be the image's USER, or a non-root check would fail at start.
    dockerfile = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    sc = chart_defaults()["securityContext"]
    assert users and users[-1] == f"{sc['runAsUser']}:{sc['runAsGroup']}"


@pytest.mark.parametrize("values", MATRIX, ids=ids(MATRIX))
def test_credentials_only_via_secret_refs(helm, values):
    v = merged_values(values)
    docs = render_matrix(helm, values)
    assert kinds(docs, "Secret") == [], "the chart never renders credentials into a Secret itself"
    spec = pod_spec(only(docs, "Deployment"))
    for c in spec.get("initContainers", []) + spec["containers"]:
        for e in c.get("env", []):
            if SECRETISH.search(e["name"]):
                assert "value" not in e and "secretKeyRef" in e["valueFrom"], (c["name"], e)
        for source in c.get("envFrom", []):
            assert set(source) <= {"secretRef", "configMapRef", "prefix"}, source
    container, _ = satchel_container(spec)
    env = env_map(container)
    for name, ref in v["secretEnv"].items():
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": ref["secretName"], "key": ref["key"]}
    for cm in kinds(docs, "ConfigMap"):
        text = "\n".join(cm["data"].values())
        for match in re.finditer(r"(?im)^[ \t]*-?[ \t]*(\w*(?:pass|api_key|token)\w*):[ \t]*(\S.*)$", text):
            assert match[2].startswith("${secrets:"), match[0]


@pytest.mark.parametrize(
    "content, complaint",
    [
        ({"kind": "Spicepod", "datasets": [{"from": "postgres:t", "name": "t",
                                            "params": {"pg_pass": "hunter2"}}]},
         "spicepod.content.datasets[0].params.pg_pass: credentials never go inline"),
        ({"kind": "Spicepod", "datasets": [{"from": "postgres:t", "name": "t",
                                            "params": {"pg_connection_string": "postgres://u:hunter2@db/x"}}]},
         "params.pg_connection_string: the URL carries a literal password"),
        ({"kind": "Spicepod", "runtime": {"auth": {"api_key": {"enabled": True, "keys": ["abc123"]}}}},
         "spicepod.content.runtime.auth.api_key.keys[0]: credentials never go inline"),
        ({"kind": "Spicepod", "models": [{"from": "openai:gpt", "name": "m",
                                          "params": {"openai_api_key": "sk-123"}}]},
         "params.openai_api_key: credentials never go inline"),
        ({"kind": "Spicepod", "datasets": [{"from": "https://x/y.csv", "name": "y",
                                            "params": {"http_headers": {"Authorization": "Bearer abc"}}}]},
         "Authorization: the header carries a literal credential"),
        ({"kind": "Spicepod", "datasets": [{"from": "https://x/y.csv", "name": "y",
                                            "params": {"http_auth": "user:hunter2"}}]},
         "params.http_auth: credentials never go inline"),
        ({"kind": "Spicepod", "datasets": [{"from": "elasticsearch:logs", "name": "logs",
                                            "params": {"elasticsearch_pass": 12345}}]},
         "params.elasticsearch_pass: credentials never go inline"),
    ],
)
def test_inline_credentials_in_the_spicepod_are_refused(helm, content, complaint):
    err = helm.template_error(set_json=[f"spicepod.content={json.dumps(content)}"])
    assert complaint in err, err


def test_secret_references_in_the_spicepod_are_accepted(helm):
    content = {"kind": "Spicepod", "version": "v1", "name": "x",
               "runtime": {"auth": {"api_key": {"enabled": True, "keys": ["${secrets:SATCHEL_API_KEY}"]}}},
               "datasets": [{"from": "postgres:t", "name": "t", "params": {
                   "pg_pass": "${secrets:PG_PASS}",
                   "pg_connection_string": "postgres://u:${secrets:PG_PASS}@db:5432/x"}}]}
    docs = helm.template(set_json=[f"spicepod.content={json.dumps(content)}"])
    assert yaml.safe_load(only(docs, "ConfigMap")["data"]["spicepod.yaml"]) == content


@pytest.mark.parametrize("values_path", ["env", "agent.env"])
def test_inline_credential_env_is_refused(helm, values_path):
    sets = [f'{values_path}=[{{"name":"OPENAI_API_KEY","value":"sk-123"}}]']
    if values_path.startswith("agent"):
        sets += ['mode="sidecar"', 'agent.image={"repository":"a","tag":"1"}']
    err = helm.template_error(set_json=sets)
    assert "credentials come from Secrets" in err, err


@pytest.mark.parametrize("values", MATRIX, ids=ids(MATRIX))
def test_listen_addresses_pod_path_and_memory_limit(helm, values):
    v = merged_values(values)
    docs = render_matrix(helm, values)
    spec = pod_spec(only(docs, "Deployment"))
    container, _ = satchel_container(spec)
    env = env_map(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert env["SATCHEL_HTTP"]["value"] == f"0.0.0.0:{ports['satchel-http']}"
    assert env["SATCHEL_FLIGHT"]["value"] == f"0.0.0.0:{ports['satchel-flight']}"
    assert env["SATCHEL_METRICS"]["value"] == f"0.0.0.0:{ports['satchel-metrics']}"
    assert ports == {"satchel-http": v["ports"]["http"], "satchel-flight": v["ports"]["flight"],
                     "satchel-metrics": v["ports"]["metrics"]}
    # The memory limit reaches Satchel through the downward API, in bytes.
    ref = env["SATCHEL_MEMORY_LIMIT"]["valueFrom"]["resourceFieldRef"]
    assert ref["resource"] == "limits.memory" and ref.get("divisor", "1") == "1"
    assert ref.get("containerName", "satchel") == "satchel"
    assert container["resources"]["limits"]["memory"] == v["resources"]["limits"]["memory"]
    # SATCHEL_POD names the file the spicepod ConfigMap volume puts in place.
    pod_file = Path(env["SATCHEL_POD"]["value"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(pod_file.parent))
    assert mount["readOnly"] is True
    volume = next(vol for vol in spec["volumes"] if vol["name"] == mount["name"])
    assert volume["configMap"]["items"] == [{"key": pod_file.name, "path": pod_file.name}]
    cm_name = volume["configMap"]["name"]
    if v["spicepod"]["existingConfigMap"]:
        assert cm_name == v["spicepod"]["existingConfigMap"] and not kinds(docs, "ConfigMap")
    else:
        cm = only(docs, "ConfigMap")
        assert cm["metadata"]["name"] == cm_name and pod_file.name in cm["data"]
        assert yaml.safe_load(cm["data"][pod_file.name])["kind"] == "Spicepod"
    # Standalone: the Service reaches the named ports.
    for service in kinds(docs, "Service"):
        targets = {p["targetPort"] for p in service["spec"]["ports"]}
        assert targets == set(ports)
        assert service["spec"]["selector"].items() <= deployment_pod_labels(docs).items()


def deployment_pod_labels(docs):
    return only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]


def test_deployment_selector_matches_its_pods(helm):
    for values in MATRIX:
        deployment = only(render_matrix(helm, values), "Deployment")
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_service_is_cluster_ip_unless_asked(helm):
    assert only(helm.template(), "Service")["spec"]["type"] == "ClusterIP"
    assert chart_defaults()["service"]["type"] == "ClusterIP"
    assert only(helm.template(sets=["service.type=LoadBalancer"]), "Service")["spec"]["type"] == "LoadBalancer"


@pytest.mark.parametrize("values", [None, CHART / "ci" / "tls-values.yaml"], ids=["chart-default", "tls"])
def test_rendered_spicepod_is_accepted_by_satchel_validate(helm, tmp_path, values):
    """The spicepod the chart generates (the default one, and the TLS example) passes the
    real config loader, through the CLI the container runs."""
    docs = helm.template(values=[values] if values else [])
    pod = tmp_path / "spicepod.yaml"
    pod.write_text(only(docs, "ConfigMap")["data"]["spicepod.yaml"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SATCHEL_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from serving.cli import main; sys.exit(main())",
         "validate", "--pod", str(pod)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- checksum


def checksum(docs):
    return deployment_pod_annotations(docs)["checksum/spicepod"]


def deployment_pod_annotations(docs):
    return only(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]


@pytest.mark.parametrize("values", [p for p in MATRIX if not values_of(p).get("spicepod", {}).get("existingConfigMap")],
                         ids=ids([p for p in MATRIX if not values_of(p).get("spicepod", {}).get("existingConfigMap")]))
def test_checksum_annotation_is_the_hash_of_the_rendered_spicepod(helm, values):
    docs = render_matrix(helm, values)
    data = only(docs, "ConfigMap")["data"]
    (content,) = data.values()
    assert checksum(docs) == hashlib.sha256(content.encode()).hexdigest()


def test_checksum_changes_when_the_spicepod_changes_and_only_then(helm):
    base = ['spicepod.content={"version":"v1","kind":"Spicepod","name":"a"}']
    changed = ['spicepod.content={"version":"v1","kind":"Spicepod","name":"b"}']
    first = checksum(helm.template(set_json=base))
    assert checksum(helm.template(set_json=changed)) != first
    assert checksum(helm.template(set_json=base, sets=["replicaCount=3", "resources.limits.memory=2Gi"])) == first
    # Sidecar mode carries it on the agent's pod.
    sidecar = ["mode=sidecar", "agent.image.repository=a", "agent.image.tag=1"]
    assert checksum(helm.template(set_json=base, set_string=sidecar)) == first
    assert checksum(helm.template(set_json=changed, set_string=sidecar)) != first
    # An existing ConfigMap: the hash follows the referenced name (its data under a cluster).
    one = checksum(helm.template(sets=["spicepod.existingConfigMap=pod-a"]))
    assert one != checksum(helm.template(sets=["spicepod.existingConfigMap=pod-b"]))


# ----------------------------------------------------------------------------- monitoring


@pytest.mark.parametrize("values", MATRIX, ids=ids(MATRIX))
def test_monitoring_objects_only_when_enabled_and_api_exists(helm, values):
    v = merged_values(values)
    without_api = helm.template(values=[values])
    with_api = render_matrix(helm, values)
    for docs in (without_api, with_api):
        assert not [d for d in docs if "monitoring.coreos.com" in d["apiVersion"]
                    and d["kind"] not in ("ServiceMonitor", "PodMonitor")]
    assert not [d for d in without_api if d["apiVersion"].startswith("monitoring.coreos.com/")]
    want_sm = v["metrics"]["serviceMonitor"]["enabled"]
    want_pm = v["metrics"]["podMonitor"]["enabled"]
    assert len(kinds(with_api, "ServiceMonitor")) == int(want_sm)
    assert len(kinds(with_api, "PodMonitor")) == int(want_pm)
    pod_labels = deployment_pod_labels(with_api)
    container, _ = satchel_container(pod_spec(only(with_api, "Deployment")))
    for pm in kinds(with_api, "PodMonitor"):
        assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        (endpoint,) = pm["spec"]["podMetricsEndpoints"]
        assert named_port(container, endpoint["port"]) == v["ports"]["metrics"]
        assert endpoint["path"] == "/metrics"
    for sm in kinds(with_api, "ServiceMonitor"):
        service = only(with_api, "Service")
        assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        (endpoint,) = sm["spec"]["endpoints"]
        port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
        assert named_port(container, port["targetPort"]) == v["ports"]["metrics"]
        assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_service_monitor_in_sidecar_mode_is_refused(helm):
    err = helm.template_error(sets=["metrics.serviceMonitor.enabled=true"],
                              set_string=["mode=sidecar", "agent.image.repository=a", "agent.image.tag=1"])
    assert "use metrics.podMonitor.enabled in sidecar mode" in err


# ----------------------------------------------------------------------------- storage, TLS, models


def test_persistence_pvc(helm):
    docs = render_matrix(helm, CHART / "ci" / "persistence-values.yaml")
    pvc = only(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert pvc["spec"]["storageClassName"] == "fast-ssd"
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    spec = pod_spec(deployment)
    container, _ = satchel_container(spec)
    data_dir = env_map(container)["SATCHEL_DATA_DIR"]["value"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == data_dir)
    volume = next(vol for vol in spec["volumes"] if vol["name"] == mount["name"])
    assert volume == {"name": mount["name"], "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}}


def test_persistence_existing_claim_and_default_empty_dir(helm):
    docs = render_matrix(helm, CHART / "ci" / "existing-configmap-values.yaml")
    assert not kinds(docs, "PersistentVolumeClaim")
    spec = pod_spec(only(docs, "Deployment"))
    claims = [vol["persistentVolumeClaim"]["claimName"] for vol in spec["volumes"] if "persistentVolumeClaim" in vol]
    assert claims == ["orders-satchel-data"]
    default = pod_spec(only(helm.template(), "Deployment"))
    data = next(vol for vol in default["volumes"] if vol["name"] == "satchel-data")
    assert data["emptyDir"] == {"sizeLimit": "2Gi"}
    assert "strategy" not in only(helm.template(), "Deployment")["spec"]


def test_pvc_with_several_replicas_is_refused(helm):
    err = helm.template_error(sets=["persistence.type=pvc", "replicaCount=2"])
    assert "one ReadWriteOnce claim cannot back several pods" in err


def test_model_volume_is_mounted_read_only(helm):
    spec = pod_spec(only(render_matrix(helm, CHART / "ci" / "persistence-values.yaml"), "Deployment"))
    container, _ = satchel_container(spec)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/models")
    assert mount["readOnly"] is True
    volume = next(vol for vol in spec["volumes"] if vol["name"] == mount["name"])
    assert volume["persistentVolumeClaim"] == {"claimName": "gguf-models", "readOnly": True}


def test_tls_mounts_the_secret_where_the_spicepod_points(helm):
    values = CHART / "ci" / "tls-values.yaml"
    docs = render_matrix(helm, values)
    spec = pod_spec(only(docs, "Deployment"))
    container, _ = satchel_container(spec)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/satchel/tls")
    assert mount["readOnly"] is True
    volume = next(vol for vol in spec["volumes"] if vol["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "satchel-tls"
    assert volume["secret"]["defaultMode"] == 0o440
    pod = yaml.safe_load(only(docs, "ConfigMap")["data"]["spicepod.yaml"])
    for key in ("certificate_file", "key_file"):
        assert pod["runtime"]["tls"][key].startswith(mount["mountPath"] + "/")
    assert env_map(spec["containers"][0])["SATCHEL_FLIGHT_URL"]["value"] == "grpc+tls://127.0.0.1:50051"


@pytest.mark.parametrize(
    "sets, set_json, complaint",
    [
        (["tls.enabled=true"], [], "tls.enabled=true needs tls.secretName"),
        (["tls.enabled=true", "tls.secretName=s"], [], "runtime.tls.enabled is not true"),
        ([], ['spicepod.content={"kind":"Spicepod","runtime":{"tls":{"enabled":true}}}'],
         "the spicepod enables runtime.tls but tls.enabled=false"),
    ],
)
def test_tls_mismatches_are_refused(helm, sets, set_json, complaint):
    assert complaint in helm.template_error(sets=sets, set_json=set_json)


def test_sidecar_without_agent_image_is_refused(helm):
    assert "set agent.image.repository" in helm.template_error(sets=["mode=sidecar"])


def test_sidecar_supporting_objects_only(helm, kube_versions):
    docs = helm.template(sets=["mode=sidecar", "agent.enabled=false"])
    assert sorted(d["kind"] for d in docs) == ["ConfigMap"]
    for doc in docs:
        kubernetes_validate.validate(doc, kube_versions[0], strict=True)


# ----------------------------------------------------------------------------- agent chart


@pytest.fixture(scope="module")
def agent_chart(tmp_path_factory):
    """The example agent chart with this chart vendored as its dependency."""
    root = tmp_path_factory.mktemp("agent") / "agent-chart"
    shutil.copytree(AGENT_EXAMPLE, root)
    shutil.copytree(CHART, root / "charts" / "satchel", ignore=shutil.ignore_patterns("ci"))
    return root


def test_agent_chart_includes_the_named_templates(helm, kube_versions, agent_chart):
    for version in kube_versions:
        proc = helm.lint(agent_chart, kube_version=version)
        assert proc.returncode == 0 and "[WARNING]" not in proc.stdout, proc.stdout + proc.stderr
        docs = helm.template(agent_chart, kube_version=version)
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment"]
    deployment = only(docs, "Deployment")
    spec = pod_spec(deployment)
    container, is_init = satchel_container(spec)
    assert is_init and container["restartPolicy"] == "Always"
    assert container["image"] == "satchel:0.1.0", "the tag defaults to the satchel chart's appVersion"
    env = env_map(container)
    assert env["PG_PASS"]["valueFrom"]["secretKeyRef"] == {"name": "orders-db", "key": "password"}
    assert env_map(spec["containers"][0])["SATCHEL_URL"]["value"] == "http://127.0.0.1:8090"
    cm = only(docs, "ConfigMap")
    volume = next(vol for vol in spec["volumes"] if "configMap" in vol)
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    assert checksum(docs) == hashlib.sha256(cm["data"]["spicepod.yaml"].encode()).hexdigest()
    assert deployment["spec"]["template"]["metadata"]["labels"]["satchel-sidecar"] == "orders-satchel"
    probes = {k: container[k]["httpGet"]["path"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes == {"startupProbe": "/health", "livenessProbe": "/health", "readinessProbe": "/v1/ready"}


def test_agent_chart_pod_monitor_selects_the_agent_pod(helm, agent_chart):
    docs = helm.template(agent_chart, api_versions=MONITORING_API, sets=["satchel.metrics.podMonitor.enabled=true"])
    pm = only(docs, "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"].items() <= deployment_pod_labels(docs).items()


# ----------------------------------------------------------------------------- packaging


def test_packaged_chart_leaves_out_the_test_matrix(helm, tmp_path):
    proc = helm.run("package", str(CHART), "--destination", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (archive,) = tmp_path.glob("satchel-*.tgz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "satchel/values.schema.json" in names and "satchel/templates/_pod.tpl" in names
    assert not [n for n in names if n.startswith("satchel/ci/")]


# ----------------------------------------------------------------------------- fleet snapshots


@pytest.mark.parametrize("role, mode", [("follower", "follow"), ("publisher", "create_only")])
def test_a_snapshot_role_writes_the_store_and_each_accelerated_datasets_mode(helm, role, mode):
    docs = helm.template(values=[CHART / "ci" / f"fleet-{role}-values.yaml"])
    pod = yaml.safe_load(only(docs, "ConfigMap")["data"]["spicepod.yaml"])
    store = pod["runtime"]["snapshots"]
    assert store["enabled"] is True and store["location"] == "s3://satchel-fleet/orders-agent"
    assert store["params"] == {"s3_region": "us-east-1", "s3_endpoint": "http://minio.storage.svc:9000",
                               "s3_key": "${secrets:SATCHEL_SNAPSHOT_S3_KEY}",
                               "s3_secret": "${secrets:SATCHEL_SNAPSHOT_S3_SECRET}"}
    assert [d["acceleration"]["snapshots"] for d in pod["datasets"]] == [mode]
    env = {e["name"]: e for e in only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SATCHEL_SNAPSHOT_S3_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "satchel-snapshots-s3",
                                                                          "key": "access-key"}
    assert env["SATCHEL_SNAPSHOT_S3_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == "secret-key"


def test_a_snapshot_role_needs_a_location_and_a_spicepod_map(helm):
    assert "snapshots.location" in helm.template_error(
        sets=["snapshots.role=follower"], set_json=['spicepod.content={"version": "v1", "kind": "Spicepod", "name": "p"}'])
    assert "YAML map" in helm.template_error(sets=["snapshots.role=follower", "snapshots.location=s3://b/p"],
                                             set_string=["spicepod.content=version: v1"])
