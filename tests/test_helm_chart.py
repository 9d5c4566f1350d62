"""The container image recipe and the Helm chart (helm/dwasm), checked offline.

The chart is linted (strict) and rendered with Helm 4's own engine through helm-python-sdk
(no cluster, no ``helm`` binary), and every rendered manifest is validated against the
Kubernetes OpenAPI schemas that kubernetes-validate ships, in strict mode (unknown fields fail).
"""

from __future__ import annotations

import base64
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

helm = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "dwasm"
RELEASE, NAMESPACE = "demo", "flows"
# The oldest version the chart declares (Chart.yaml kubeVersion) and the newest with schemas.
KUBE_VERSIONS = ("1.27", kubernetes_validate.latest_version())

CLUSTER = {
    "replicaCount": 3,
    "database": {"existingSecret": "pg", "existingSecretKey": "url"},
    "etcd": {"existingSecret": "etcd", "existingSecretKey": "endpoints"},
    "cluster": {"existingSecret": "dwasm-cluster", "shards": 64},
    "apiTokens": {"existingSecret": "dwasm-tokens"},
}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "single-node": {"database": {"url": "postgresql://dwasm:pw@pg.db:5432/dwasm"},
                    "apiTokens": {"tokens": ["t1", "t2"]}},
    "cluster-existing-secrets": CLUSTER,
    "cluster-inline": {"replicaCount": 5, "database": {"url": "postgresql://pg/dwasm"},
                       "etcd": {"endpoints": ["etcd-0.etcd:2379", "http://etcd-1.etcd:2379"]},
                       "cluster": {"secret": "s3cret"}, "shutdownGrace": 120,
                       "podDisruptionBudget": {"enabled": False}},
    "ingress-servicemonitor": {
        "database": {"url": "postgresql://pg/dwasm"},
        "ingress": {"enabled": True, "className": "nginx",
                    "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "64m"},
                    "hosts": [{"host": "flows.example.org",
                               "paths": [{"path": "/", "pathType": "Prefix"}]}],
                    "tls": [{"secretName": "flows-tls", "hosts": ["flows.example.org"]}]},
        "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prom"}},
    },
    "custom-resources": {
        "database": {"existingSecret": "pg"},
        "resources": {"requests": {"cpu": "2", "memory": "1Gi"},
                      "limits": {"cpu": "4", "memory": "4Gi"}},
        "image": {"repository": "registry.example.org/dwasm", "tag": "1.2.3"},
        "env": {"DWASM_LOG_LEVEL": "warning", "DWASM_MAX_PAYLOAD": "32MiB"},
        "nodeSelector": {"kubernetes.io/arch": "amd64"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "dwasm",
                         "effect": "NoSchedule"}],
        "port": 9090, "serviceAccount": {"create": False, "name": "builtin"},
    },
}
# Kinds backed by CRDs: kubernetes-validate has no schema for them; checked by hand below.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def render(values: dict[str, Any]) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def manifests(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart renders (NOTES.txt excluded), in template order."""
    objects = []
    for path, text in sorted(render(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def only(objects: list[dict[str, Any]], kind: str, **match: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind
             and all(o["metadata"].get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"{len(found)} {kind} objects matching {match}"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (main,) = only(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return main


def env_of(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(objects)["env"]}


def secret_ref(entry: dict[str, Any]) -> tuple[str, str]:
    ref = entry["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


# -- the image --------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def test_dockerfile_runs_dwasm_serve_as_non_root_on_all_interfaces() -> None:
    steps = dockerfile_instructions()
    stages = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    final = steps[stages[-1]:]
    assert final[0][1].startswith("python:3.11-slim")
    users = [args for word, args in final if word == "USER"]
    assert users, "the final stage must switch to a non-root user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, "USER must be a numeric non-root uid"
    # Kubernetes' runAsNonRoot can only verify a numeric uid; the chart uses the same one.
    with helm.Chart.load(CHART) as chart:
        assert chart.values["podSecurityContext"]["runAsUser"] == int(uid)
    # Nothing runs as root after the switch, and the entrypoint comes after it.
    user_at = max(i for i, (word, _) in enumerate(final) if word == "USER")
    assert not [a for w, a in final[user_at:] if w == "RUN"]
    entrypoints = [json.loads(args) for word, args in final if word == "ENTRYPOINT"]
    assert entrypoints[-1] == ["dwasm", "serve", "--host", "0.0.0.0"]
    assert ("EXPOSE", "8080") in final
    # The entrypoint is the console script the package really installs.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["dwasm"] == "app.cli:main"


def test_dockerfile_copies_every_package_and_the_migrations() -> None:
    """A package left out of the image would install fine and fail at import time."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {p.split(".")[0] for p in setuptools["packages"]["find"]["include"]}
    migrations = {Path(g).parts[0] for gs in setuptools["data-files"].values() for g in gs}
    copied = set()
    for word, args in dockerfile_instructions():
        if word == "COPY" and not args.startswith("--from"):
            copied |= {Path(src).parts[0] for src in args.split()[:-1]}
    needed = packages | migrations | {"pyproject.toml", "README.md"}
    assert needed <= copied, f"not copied into the image: {sorted(needed - copied)}"
    for name in needed:
        assert (ROOT / name).exists(), name
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert not needed & ignored, "a needed file is excluded from the build context"
    assert {".git", ".venv"} <= ignored


# -- lint and schema validation ---------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_chart_lints_strict(name: str) -> None:
    report = helm.lint(CHART, VALUE_SETS[name], strict=True, namespace=NAMESPACE,
                       kube_version=f"v{KUBE_VERSIONS[-1]}.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_manifest_is_valid_kubernetes(name: str) -> None:
    objects = manifests(VALUE_SETS[name])
    kinds = {o["kind"] for o in objects}
    assert {"StatefulSet", "Service", "Secret"} & kinds
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_validation_catches_a_broken_manifest() -> None:
    """The check above is not vacuous: a misspelt field of a rendered object fails it."""
    sts = only(manifests({}), "StatefulSet")
    sts["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, KUBE_VERSIONS[-1], strict=True)


# -- what the chart renders -------------------------------------------------------------------

def test_defaults_single_node_with_probes_drain_and_security() -> None:
    objects = manifests({})
    sts = only(objects, "StatefulSet")
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    assert spec["replicas"] == 1
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    assert "maxUnavailable" not in spec["updateStrategy"]["rollingUpdate"]  # one at a time
    main = container(objects)
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert main["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    sleep = main["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and int(sleep[1]) > 0
    env = env_of(objects)
    grace = float(env["DWASM_SHUTDOWN_GRACE"]["value"])
    assert grace == 30
    # The pod's budget covers the preStop sleep, the drain and the HTTP server's 10 s shutdown.
    assert pod["terminationGracePeriodSeconds"] >= int(sleep[1]) + grace + 10

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = main["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert {"name": "tmp", "mountPath": "/tmp"} in main["volumeMounts"]
    assert pod["automountServiceAccountToken"] is False
    assert main["resources"]["requests"] and main["resources"]["limits"]["memory"]

    # Single node: no etcd, no cluster secret; the database URL comes from a Secret.
    assert "DWASM_ETCD" not in env and "DWASM_CLUSTER_SECRET" not in env
    assert "DWASM_API_TOKENS" not in env and "DWASM_ALLOW_NO_AUTH" not in env
    assert secret_ref(env["DWASM_DATABASE_URL"]) == (f"{RELEASE}-dwasm-database", "database-url")
    assert env["DWASM_HOST"]["value"] == "0.0.0.0"
    assert not [o for o in objects if o["kind"] in ("Secret", "Ingress", "ServiceMonitor")]

    pdb = only(objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    notes = render({})["dwasm/templates/NOTES.txt"]
    assert f"create secret generic {RELEASE}-dwasm-database" in notes


def test_services_headless_for_peers_and_one_for_clients() -> None:
    objects = manifests({})
    sts = only(objects, "StatefulSet")
    peers = only(objects, "Service", name=sts["spec"]["serviceName"])
    assert peers["spec"]["clusterIP"] == "None"
    assert peers["spec"]["publishNotReadyAddresses"] is True  # draining nodes stay reachable
    client = only(objects, "Service", name=f"{RELEASE}-dwasm")
    assert "clusterIP" not in client["spec"]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    for svc in (peers, client):
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        assert svc["spec"]["ports"][0]["targetPort"] == "http"


def test_node_identity_comes_from_the_pod_and_the_headless_service() -> None:
    objects = manifests(CLUSTER)
    env = env_of(objects)
    names = [e["name"] for e in container(objects)["env"]]
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["DWASM_NODE_ID"]["value"] == "$(POD_NAME)"
    headless = only(objects, "StatefulSet")["spec"]["serviceName"]
    assert env["DWASM_ADVERTISE_URL"]["value"] == (
        f"http://$(POD_NAME).{headless}.$(POD_NAMESPACE).svc.cluster.local:8080")
    # $(VAR) only expands variables defined earlier in the list.
    for var in ("POD_NAME", "POD_NAMESPACE"):
        assert names.index(var) < names.index("DWASM_ADVERTISE_URL")
    assert names.index("POD_NAME") < names.index("DWASM_NODE_ID")


def test_cluster_with_existing_secrets() -> None:
    objects = manifests(CLUSTER)
    assert only(objects, "StatefulSet")["spec"]["replicas"] == 3
    env = env_of(objects)
    assert secret_ref(env["DWASM_DATABASE_URL"]) == ("pg", "url")
    assert secret_ref(env["DWASM_ETCD"]) == ("etcd", "endpoints")
    assert secret_ref(env["DWASM_CLUSTER_SECRET"]) == ("dwasm-cluster", "cluster-secret")
    assert secret_ref(env["DWASM_API_TOKENS"]) == ("dwasm-tokens", "api-tokens")
    assert env["DWASM_SHARDS"]["value"] == "64"
    assert env["DWASM_ETCD_PREFIX"]["value"] == "/dwasm/"
    # Everything sensitive lives in Secrets the user manages: the chart renders none.
    assert not [o for o in objects if o["kind"] == "Secret"]
    for entry in env.values():
        assert "value" in entry or "valueFrom" in entry


def test_inline_values_go_into_the_charts_secret() -> None:
    values = VALUE_SETS["cluster-inline"]
    objects = manifests(values)
    secret = only(objects, "Secret")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == {"database-url": "postgresql://pg/dwasm",
                    "etcd-endpoints": "etcd-0.etcd:2379,http://etcd-1.etcd:2379",
                    "cluster-secret": "s3cret"}
    env = env_of(objects)
    for var, key in (("DWASM_DATABASE_URL", "database-url"), ("DWASM_ETCD", "etcd-endpoints"),
                     ("DWASM_CLUSTER_SECRET", "cluster-secret")):
        assert secret_ref(env[var]) == (secret["metadata"]["name"], key)
    assert not [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    # A longer drain lengthens the pod's termination budget with it.
    assert env["DWASM_SHUTDOWN_GRACE"]["value"] == "120"
    pod = only(objects, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 120 + 10

    tokens = manifests(VALUE_SETS["single-node"])
    data = {k: base64.b64decode(v).decode() for k, v in only(tokens, "Secret")["data"].items()}
    assert data["api-tokens"] == "t1,t2"
    assert secret_ref(env_of(tokens)["DWASM_API_TOKENS"])[1] == "api-tokens"


def test_a_changed_secret_rolls_the_pods() -> None:
    def checksum(url: str) -> str:
        sts = only(manifests({"database": {"url": url}}), "StatefulSet")
        return sts["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]
    assert checksum("postgresql://a/x") == checksum("postgresql://a/x")
    assert checksum("postgresql://a/x") != checksum("postgresql://b/x")


def test_ingress_and_service_monitor() -> None:
    objects = manifests(VALUE_SETS["ingress-servicemonitor"])
    client = only(objects, "Service", name=f"{RELEASE}-dwasm")
    ingress = only(objects, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["flows.example.org"], "secretName": "flows-tls"}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": client["metadata"]["name"], "port": {"name": "http"}}

    monitor = only(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "http", "path": "/metrics", "interval": "15s",
                        "scrapeTimeout": "10s"}
    # It selects exactly the client Service (not the headless one too: no double scrapes),
    # and that Service has the named port.
    services = [o for o in objects if o["kind"] == "Service"]
    selected = [s for s in services
                if monitor["spec"]["selector"]["matchLabels"].items()
                <= s["metadata"]["labels"].items()]
    assert selected == [client]
    assert [p["name"] for p in client["spec"]["ports"]] == ["http"]


def test_custom_resources_image_env_and_port() -> None:
    values = VALUE_SETS["custom-resources"]
    objects = manifests(values)
    main = container(objects)
    assert main["resources"] == values["resources"]
    assert main["image"] == "registry.example.org/dwasm:1.2.3"
    env = env_of(objects)
    assert env["DWASM_LOG_LEVEL"]["value"] == "warning"
    assert env["DWASM_MAX_PAYLOAD"]["value"] == "32MiB"
    assert env["DWASM_PORT"]["value"] == "9090"
    assert env["DWASM_ADVERTISE_URL"]["value"].endswith(":9090")
    assert main["ports"][0]["containerPort"] == 9090
    pod = only(objects, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "builtin"
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
    assert not [o for o in objects if o["kind"] == "ServiceAccount"]
    assert only(objects, "Service", name=f"{RELEASE}-dwasm")["spec"]["ports"][0]["port"] == 9090


# -- values the chart refuses -----------------------------------------------------------------

@pytest.mark.parametrize(("values", "message"), [
    ({"replicaCount": 3}, "replicaCount is 3 but etcd is not configured"),
    ({"replicaCount": 2, "database": {"url": "postgresql://pg/x"}},
     "set etcd.endpoints or etcd.existingSecret"),
    ({"etcd": {"endpoints": ["etcd:2379"]}}, "needs cluster.secret or cluster.existingSecret"),
    ({"etcd": {"endpoints": ["https://etcd:2379"]}, "cluster": {"secret": "s"}},
     "only http:// or host:port endpoints"),
    ({"database": {"url": "postgresql://pg/x", "existingSecret": "pg"}},
     "set database.url or database.existingSecret, not both"),
    ({"env": {"DWASM_NODE_ID": "fixed"}}, "env.DWASM_NODE_ID is set by the chart"),
    ({"replicaCount": 0}, "replicaCount must be at least 1"),
])
def test_unworkable_values_fail_to_render_with_a_clear_message(
        values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


def test_no_tokens_means_no_pods_unless_unauthenticated_access_is_allowed() -> None:
    notes = next(t for p, t in render({}).items() if p.endswith("NOTES.txt"))
    assert "pods will not start" in notes
    allowed = manifests({"apiTokens": {"allowNoAuth": True}})
    assert env_of(allowed)["DWASM_ALLOW_NO_AUTH"]["value"] == "1"
    with_tokens = manifests({"apiTokens": {"tokens": ["worker:" + "w" * 20],
                                           "allowNoAuth": True}})
    assert "DWASM_ALLOW_NO_AUTH" not in env_of(with_tokens)
    notes = next(t for p, t in render({"apiTokens": {"allowNoAuth": True}}).items()
                 if p.endswith("NOTES.txt"))
    assert "pods will not start" not in notes
