"""The Kubernetes manifests under deploy/k8s, checked offline.

Every YAML document validates against the Kubernetes API schemas of
`K8S_VERSION` in strict mode (kubernetes-validate: an unknown field is an
error). Custom resources, whose CRDs are not part of those schemas, are
checked by hand against the fields their CRD defines; a kind that is
neither fails. Every kustomization's references resolve (resources,
components, patch targets, generator files, image names), which runs
everywhere; the real build with kustomize (`kustomize build` or
`kubectl kustomize`) runs where one of those binaries is installed, and
its output is validated the same way.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.natsserver import nats_server_binary

K8S_VERSION = "1.32"
ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
KUSTOMIZATION = "kustomization.yaml"

Doc = dict[str, Any]


class ManifestError(AssertionError):
    """A manifest that Kubernetes or kustomize would refuse."""


# --- reading the tree -----------------------------------------------------


def documents(path: Path) -> list[Doc]:
    """The non-empty YAML documents of one file (a copy the caller may
    change)."""
    return copy.deepcopy(_parsed(path.resolve()))


@functools.cache
def _parsed(path: Path) -> list[Doc]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open() as stream:
        return [doc for doc in yaml.load_all(stream, Loader=loader) if doc]


def kustomization_dirs() -> list[Path]:
    return sorted(path.parent for path in K8S.rglob(KUSTOMIZATION))


def kustomization(folder: Path) -> Doc:
    return documents(folder / KUSTOMIZATION)[0]


def rel(path: Path) -> str:
    return str(path.relative_to(K8S))


def patch_paths(folder: Path) -> list[Path]:
    """Files a kustomization uses as patches (not as resources)."""
    spec = kustomization(folder)
    paths = [p["path"] for p in spec.get("patches", []) if "path" in p]
    paths += spec.get("patchesStrategicMerge", [])
    return [(folder / path).resolve() for path in paths]


def resource_files() -> list[Path]:
    """Every YAML file that holds whole resources: not a kustomization,
    not a patch."""
    patches = {path for folder in kustomization_dirs() for path in patch_paths(folder)}
    files = sorted(K8S.rglob("*.yaml")) + sorted(K8S.rglob("*.yml"))
    return [
        path
        for path in files
        if path.name != KUSTOMIZATION and path.resolve() not in patches
    ]


def manifest_documents() -> list[tuple[str, Doc]]:
    """(id, document) for every resource document in the tree."""
    found = []
    for path in resource_files():
        for index, doc in enumerate(documents(path)):
            name = doc.get("metadata", {}).get("name", "?")
            found.append((f"{rel(path)}#{index}:{doc.get('kind')}/{name}", doc))
    return found


def reachable(folder: Path) -> list[Doc]:
    """The resources a kustomization folder pulls in, before transformers,
    plus a stand-in for each object its generators make."""
    spec = kustomization(folder)
    found: list[Doc] = []
    for entry in spec.get("resources", []) + spec.get("components", []):
        target = folder / entry
        found += reachable(target) if target.is_dir() else documents(target)
    for kind, key in (
        ("ConfigMap", "configMapGenerator"),
        ("Secret", "secretGenerator"),
    ):
        found += [
            {"kind": kind, "metadata": {"name": g["name"]}} for g in spec.get(key, [])
        ]
    return found


def base_workloads() -> list[Doc]:
    kinds = {"Deployment", "StatefulSet"}
    return [doc for doc in reachable(BASE) if doc.get("kind") in kinds]


def base_resource(kind: str, name: str) -> Doc:
    for doc in reachable(BASE):
        if doc.get("kind") == kind and doc["metadata"]["name"] == name:
            return doc
    raise ManifestError(f"the base has no {kind}/{name}")


# --- validating one document ----------------------------------------------

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "advanced",
    "fallback",
    "triggers",
}
TRIGGER_FIELDS = {
    "type",
    "name",
    "metadata",
    "metricType",
    "authenticationRef",
    "useCachedMetrics",
}


def check_scaled_object(doc: Doc) -> None:
    """The fields of keda.sh/v1alpha1 ScaledObject that KEDA's CRD requires
    or allows at the top of its spec and in each trigger."""
    spec = doc.get("spec", {})
    unknown = set(spec) - SCALED_OBJECT_SPEC
    if unknown:
        raise ManifestError(f"ScaledObject spec has unknown fields {unknown}")
    if not isinstance(spec.get("scaleTargetRef", {}).get("name"), str):
        raise ManifestError("ScaledObject needs spec.scaleTargetRef.name")
    if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
        raise ManifestError("ScaledObject minReplicaCount exceeds maxReplicaCount")
    triggers = spec.get("triggers")
    if not triggers:
        raise ManifestError("ScaledObject needs at least one trigger")
    for trigger in triggers:
        check_trigger(trigger)


def check_trigger(trigger: Doc) -> None:
    unknown = set(trigger) - TRIGGER_FIELDS
    if unknown:
        raise ManifestError(f"trigger has unknown fields {unknown}")
    if not isinstance(trigger.get("type"), str):
        raise ManifestError("every trigger needs a type")
    metadata = trigger.get("metadata", {})
    if not all(isinstance(value, str) for value in metadata.values()):
        raise ManifestError("trigger metadata values must all be strings")
    if trigger.get("metricType", "AverageValue") not in {
        "AverageValue",
        "Value",
        "Utilization",
    }:
        raise ManifestError(f"unknown metricType {trigger['metricType']}")


CUSTOM_KINDS: dict[tuple[str, str], Callable[[Doc], None]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): check_scaled_object,
}


def check_custom(doc: Doc, check: Callable[[Doc], None]) -> None:
    """Object structure every custom resource shares, then its own check."""
    if set(doc) - {"apiVersion", "kind", "metadata", "spec"}:
        raise ManifestError(f"unexpected top-level fields in {doc['kind']}")
    if not DNS_LABEL.match(doc.get("metadata", {}).get("name", "")):
        raise ManifestError(f"{doc['kind']} needs a DNS-label metadata.name")
    if not isinstance(doc.get("spec"), dict):
        raise ManifestError(f"{doc['kind']} needs a spec mapping")
    check(doc)


def check_document(doc: Doc) -> None:
    """Validate one document, or raise ManifestError saying why not."""
    custom = CUSTOM_KINDS.get((doc.get("apiVersion", ""), doc.get("kind", "")))
    if custom is not None:
        check_custom(doc, custom)
        return
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise ManifestError(
            f"{exc.message}: add a hand check for it to CUSTOM_KINDS"
        ) from exc
    except kubernetes_validate.ValidationError as exc:
        # Not chained: the library's error prints the whole schema, and its
        # path and message are all that locate the fault.
        where = ".".join(str(item) for item in exc.path)
        raise ManifestError(f"{where}: {exc.message}") from None


# --- every document validates ---------------------------------------------

MANIFESTS = manifest_documents()


@pytest.mark.parametrize(
    "doc", [doc for _, doc in MANIFESTS], ids=[ident for ident, _ in MANIFESTS]
)
def test_every_manifest_document_validates_in_strict_mode(doc: Doc) -> None:
    check_document(doc)


def test_custom_resources_are_checked_by_hand_not_skipped() -> None:
    kinds = {(doc["apiVersion"], doc["kind"]) for _, doc in MANIFESTS}

    assert set(CUSTOM_KINDS) <= kinds


def test_every_scaled_object_scales_a_deployment_of_the_base() -> None:
    targets = [
        doc["spec"]["scaleTargetRef"]["name"]
        for _, doc in MANIFESTS
        if doc["kind"] == "ScaledObject"
    ]

    assert targets
    for name in targets:
        base_resource("Deployment", name)


def test_the_strict_validator_rejects_a_field_kubernetes_does_not_know() -> None:
    deployment = base_resource("Deployment", "ingress")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["healthcheck"] = {"path": "/healthz"}

    with pytest.raises(ManifestError, match="healthcheck"):
        check_document(deployment)


def test_a_kind_with_no_schema_and_no_hand_check_fails() -> None:
    widget = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {},
    }

    with pytest.raises(ManifestError, match="CUSTOM_KINDS"):
        check_document(widget)


@pytest.mark.parametrize(
    "broken",
    [
        {"scaleTargetRef": {"name": "content"}, "triggers": []},
        {"scaleTargetRef": {}, "triggers": [{"type": "cpu", "metadata": {}}]},
        {
            "scaleTargetRef": {"name": "content"},
            "triggers": [{"type": "cpu", "metadata": {"value": 70}}],
        },
        {"scaleTargetRef": {"name": "content"}, "replicas": 3},
    ],
    ids=["no-triggers", "no-target", "number-in-metadata", "unknown-field"],
)
def test_the_scaled_object_check_rejects_a_broken_spec(broken: Doc) -> None:
    doc = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "content"},
        "spec": broken,
    }

    with pytest.raises(ManifestError):
        check_document(doc)


# --- every kustomization's references resolve ------------------------------
#
# This is not kustomize: it checks what a kustomize build needs from the
# files (paths, targets, names). The build itself is further down.

FOLDERS = kustomization_dirs()
FOLDER_IDS = [rel(folder) for folder in FOLDERS]


@pytest.mark.parametrize("folder", FOLDERS, ids=FOLDER_IDS)
def test_every_resource_a_kustomization_lists_exists_and_parses(
    folder: Path,
) -> None:
    for entry in kustomization(folder).get("resources", []):
        target = folder / entry
        if target.is_dir():
            assert (target / KUSTOMIZATION).is_file(), entry
            continue
        docs = documents(target)
        assert docs, f"{entry} holds no document"
        assert all(doc.get("metadata", {}).get("name") for doc in docs), entry


@pytest.mark.parametrize("folder", FOLDERS, ids=FOLDER_IDS)
def test_every_component_a_kustomization_uses_is_a_component(
    folder: Path,
) -> None:
    for entry in kustomization(folder).get("components", []):
        component = kustomization(folder / entry)

        assert component["kind"] == "Component", entry


def patch_targets(folder: Path) -> Iterator[tuple[str, str]]:
    """(kind, name) of what each patch of a kustomization changes."""
    for patch in kustomization(folder).get("patches", []):
        if "target" in patch:
            yield patch["target"]["kind"], patch["target"]["name"]
            continue
        body = documents(folder / patch["path"]) if "path" in patch else None
        for doc in body or list(yaml.safe_load_all(patch["patch"])):
            yield doc["kind"], doc["metadata"]["name"]


def patchable(folder: Path) -> set[tuple[str, str]]:
    """What a kustomization's patches may change: what it reaches, and for
    a component (patching whatever includes it) also the base."""
    docs = reachable(folder)
    if kustomization(folder)["kind"] == "Component":
        docs += reachable(BASE)
    return {(doc["kind"], doc["metadata"]["name"]) for doc in docs}


@pytest.mark.parametrize("folder", FOLDERS, ids=FOLDER_IDS)
def test_every_patch_targets_a_resource_the_kustomization_reaches(
    folder: Path,
) -> None:
    missing = set(patch_targets(folder)) - patchable(folder)

    assert not missing


def generator_files(folder: Path) -> Iterator[str]:
    spec = kustomization(folder)
    for generator in spec.get("configMapGenerator", []) + spec.get(
        "secretGenerator", []
    ):
        yield from generator.get("envs", [])
        yield from (entry.split("=", 1)[-1] for entry in generator.get("files", []))


@pytest.mark.parametrize("folder", FOLDERS, ids=FOLDER_IDS)
def test_every_file_a_generator_reads_exists(folder: Path) -> None:
    missing = [
        name for name in generator_files(folder) if not (folder / name).is_file()
    ]

    assert not missing


def container_images(docs: list[Doc]) -> set[str]:
    """Image names (without tag) of every container and init container."""
    names = set()
    for doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            names.add(container["image"].split(":")[0])
    return names


@pytest.mark.parametrize("folder", FOLDERS, ids=FOLDER_IDS)
def test_every_image_a_kustomization_retags_is_used_by_a_container(
    folder: Path,
) -> None:
    renamed = {image["name"] for image in kustomization(folder).get("images", [])}

    assert renamed <= container_images(reachable(folder))


def test_every_manifest_file_is_listed_by_a_kustomization() -> None:
    listed = set()
    for folder in FOLDERS:
        spec = kustomization(folder)
        entries = spec.get("resources", []) + spec.get("components", [])
        listed |= {(folder / entry).resolve() for entry in entries}
        listed |= set(patch_paths(folder))
    yaml_files = [p for p in K8S.rglob("*.y*ml") if p.name != KUSTOMIZATION]

    assert [rel(p) for p in yaml_files if p.resolve() not in listed] == []


# --- the build, with kustomize itself --------------------------------------

# kubectl from the Google Cloud SDK is a dispatcher that first asks the
# cluster in the kubeconfig for its version. Give it a kubeconfig whose
# server is a closed loopback port, so a build never reaches a cluster.
OFFLINE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
  - name: offline
    cluster:
      server: https://127.0.0.1:1
contexts:
  - name: offline
    context:
      cluster: offline
current-context: offline
"""


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], list[Doc]]:
    """Build a kustomization folder (relative to deploy/k8s) with kustomize."""
    command = kustomize_command()
    if command is None:
        pytest.skip(
            "no kustomize or kubectl binary: the real build did not run; "
            "the reference checks above did"
        )
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(OFFLINE_KUBECONFIG)

    built: dict[str, list[Doc]] = {}

    def run(folder: str) -> list[Doc]:
        if folder not in built:
            built[folder] = _kustomize(command, folder, kubeconfig)
        return copy.deepcopy(built[folder])

    return run


def _kustomize(command: list[str], folder: str, kubeconfig: Path) -> list[Doc]:
    result = subprocess.run(
        [*command, str(K8S / folder)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )

    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


BUILDS = ["base", "overlays/example", "overlays/proxy-protocol", "overlays/keda"]


def test_every_overlay_is_built_by_these_tests() -> None:
    overlays = {rel(folder) for folder in FOLDERS if folder.parent.name == "overlays"}

    assert overlays <= set(BUILDS)


@pytest.mark.parametrize("folder", BUILDS, ids=BUILDS)
def test_kustomize_builds_the_folder_and_every_output_document_validates(
    build: Callable[[str], list[Doc]], folder: str
) -> None:
    rendered = build(folder)

    assert rendered
    for doc in rendered:
        check_document(doc)


@pytest.mark.parametrize("folder", BUILDS[1:], ids=BUILDS[1:])
def test_an_overlay_puts_everything_in_its_namespace(
    build: Callable[[str], list[Doc]], folder: str
) -> None:
    rendered = build(folder)
    namespaced = [doc for doc in rendered if doc["kind"] != "Namespace"]

    assert {doc["metadata"].get("namespace") for doc in namespaced} == {"perimeter"}


def test_the_example_overlay_pins_the_image_and_wires_generated_names(
    build: Callable[[str], list[Doc]],
) -> None:
    rendered = build("overlays/example")
    admin = next(
        d
        for d in rendered
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "admin"
    )
    container = admin["spec"]["template"]["spec"]["containers"][0]
    secret_ref = container["env"][0]["valueFrom"]["secretKeyRef"]["name"]

    assert container["image"] == "registry.example.com/perimeter:0.1.0"
    assert secret_ref.startswith("perimeter-admin-")
    assert container["envFrom"][0]["configMapRef"]["name"].startswith("perimeter-env-")


def test_the_keda_overlay_replaces_the_autoscalers_with_scaled_objects(
    build: Callable[[str], list[Doc]],
) -> None:
    kinds = [doc["kind"] for doc in build("overlays/keda")]

    assert "HorizontalPodAutoscaler" not in kinds
    assert kinds.count("ScaledObject") == 2


def test_the_proxy_protocol_overlay_trusts_the_balancer_and_asks_it_for_headers(
    build: Callable[[str], list[Doc]],
) -> None:
    rendered = build("overlays/proxy-protocol")
    ingress = [d for d in rendered if d["metadata"]["name"] == "ingress"]
    service = next(d for d in ingress if d["kind"] == "Service")
    deployment = next(d for d in ingress if d["kind"] == "Deployment")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]

    assert "PERIMETER_TRUSTED_PROXIES" in {item["name"] for item in env}
    assert any("proxy-protocol" in key for key in service["metadata"]["annotations"])


# --- what the base promises ------------------------------------------------

CONTAINERS = [
    (f"{doc['metadata']['name']}/{c['name']}", doc, c)
    for doc in base_workloads()
    for c in doc["spec"]["template"]["spec"].get("initContainers", [])
    + doc["spec"]["template"]["spec"]["containers"]
]


@pytest.mark.parametrize(
    ("pod", "container"),
    [(doc, c) for _, doc, c in CONTAINERS],
    ids=[ident for ident, _, _ in CONTAINERS],
)
def test_every_container_runs_locked_down_with_requests_and_limits(
    pod: Doc, container: Doc
) -> None:
    context = container["securityContext"]
    mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}

    assert pod["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "/tmp" in mounts
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][bound])


HEALTH_PORTS = {"ingress": 9100, "reputation": 9100, "content": 9100, "admin": 8080}


def probe_port(container: Doc, probe: Doc) -> int:
    """The container port number a probe's httpGet reaches."""
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


@pytest.mark.parametrize(
    ("service", "port"), list(HEALTH_PORTS.items()), ids=list(HEALTH_PORTS)
)
def test_perimeter_services_are_probed_on_healthz_at_their_health_port(
    service: str, port: int
) -> None:
    deployment = base_resource("Deployment", service)
    container = deployment["spec"]["template"]["spec"]["containers"][0]

    for kind in ("readinessProbe", "livenessProbe"):
        probe = container[kind]
        assert probe["httpGet"]["path"] == "/healthz"
        assert probe_port(container, probe) == port


@pytest.mark.parametrize("service", ["ingress", "reputation", "content"])
def test_workers_serve_health_and_metrics_on_port_9100(service: str) -> None:
    deployment = base_resource("Deployment", service)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}

    assert env["PERIMETER_METRICS_LISTEN"] == "0.0.0.0:9100"


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    wanted = selector.get("matchLabels", {})
    return all(labels.get(key) == value for key, value in wanted.items())


@pytest.mark.parametrize(
    "workload",
    base_workloads(),
    ids=[doc["metadata"]["name"] for doc in base_workloads()],
)
def test_every_workload_has_a_pod_disruption_budget(workload: Doc) -> None:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    budgets = [d for d in reachable(BASE) if d["kind"] == "PodDisruptionBudget"]

    assert any(selects(b["spec"]["selector"], labels) for b in budgets)


def test_ingress_is_a_load_balancer_that_keeps_the_client_address() -> None:
    service = base_resource("Service", "ingress")

    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert [p["port"] for p in service["spec"]["ports"]] == [25]


@pytest.mark.parametrize("service", ["reputation", "content"])
def test_scanners_are_scaled_by_an_autoscaler_that_owns_their_replicas(
    service: str,
) -> None:
    autoscaler = base_resource("HorizontalPodAutoscaler", service)
    deployment = base_resource("Deployment", service)

    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == service
    assert "replicas" not in deployment["spec"]


def test_the_admin_service_is_reachable_only_inside_the_cluster() -> None:
    assert base_resource("Service", "admin")["spec"]["type"] == "ClusterIP"


def policy(name: str) -> Doc:
    return base_resource("NetworkPolicy", name)


def test_everything_not_admitted_by_a_network_policy_is_denied() -> None:
    deny = policy("default-deny-ingress")

    assert deny["spec"]["podSelector"] == {}
    assert deny["spec"]["policyTypes"] == ["Ingress"]
    assert "ingress" not in deny["spec"]


def test_only_the_smtp_port_of_ingress_is_open_to_addresses_outside() -> None:
    policies = [d for d in reachable(BASE) if d["kind"] == "NetworkPolicy"]
    outside = [
        (p["metadata"]["name"], port["port"])
        for p in policies
        for rule in p["spec"].get("ingress", [])
        if any("ipBlock" in peer for peer in rule["from"])
        for port in rule["ports"]
    ]

    assert outside == [("ingress-smtp", 2525)]


def test_nats_admits_only_perimeter_pods_and_its_own_peers() -> None:
    peers = [
        peer for rule in policy("nats")["spec"]["ingress"] for peer in rule["from"]
    ]

    assert all(set(peer) == {"podSelector"} for peer in peers)
    names = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for peer in peers
    }
    assert names == {"perimeter", "nats"}


def test_the_admin_api_admits_its_namespace_and_prometheus_only() -> None:
    peers = policy("admin")["spec"]["ingress"][0]["from"]
    other_namespaces = [peer for peer in peers if "namespaceSelector" in peer]
    prometheus = {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}

    assert {"podSelector": {}} in peers
    assert all("ipBlock" not in peer for peer in peers)
    assert all(peer.get("podSelector") == prometheus for peer in other_namespaces)


# --- NATS -----------------------------------------------------------------

SIZE = re.compile(r"^\s*max_payload:\s*(\d+)\s*([KMG]B)?\s*$", re.MULTILINE)
UNITS = {None: 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}


def nats_conf() -> str:
    return str(base_resource("ConfigMap", "nats-config")["data"]["nats.conf"])


def test_nats_server_accepts_the_cluster_config(tmp_path: Path) -> None:
    conf = tmp_path / "nats.conf"
    conf.write_text(nats_conf())

    result = subprocess.run(
        [nats_server_binary(), "-c", str(conf), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"SERVER_NAME": "nats-0"},
    )

    assert result.returncode == 0, result.stderr + result.stdout


def test_nats_carries_payloads_of_at_least_8_mb_and_stores_jetstream_on_disk() -> None:
    match = SIZE.search(nats_conf())

    assert match is not None
    assert int(match.group(1)) * UNITS[match.group(2)] >= 8 << 20
    assert re.search(r"jetstream\s*\{[^}]*store_dir:\s*/data", nats_conf())


def test_nats_routes_name_every_pod_of_the_stateful_set() -> None:
    statefulset = base_resource("StatefulSet", "nats")
    service = statefulset["spec"]["serviceName"]
    replicas = statefulset["spec"]["replicas"]

    routes = re.findall(r"nats://(nats-\d+)\.([a-z-]+):6222", nats_conf())

    assert replicas == 3
    assert routes == [(f"nats-{i}", service) for i in range(replicas)]
    assert statefulset["spec"]["volumeClaimTemplates"]
