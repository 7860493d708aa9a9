"""The Kubernetes manifests (deploy/kubernetes): rendered here as kustomize renders them, validated against the
Kubernetes schemas offline, and checked against the mesh's own layout (deploy/kubernetes/mesh.yaml)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
#: The Kubernetes version the manifests must be valid for (the oldest we support; gRPC probes are GA since 1.27).
KUBERNETES_VERSION = "1.33.0"
HEALTH_PORT = 8081
METRICS_PORT = 9090
WORKLOADS = ("Deployment", "StatefulSet", "Job")
CLUSTER_SCOPED = ("Namespace",)
MODEL_SERVICES = ("llm", "nlp", "vision")
#: Stateless and replicated: a PodDisruptionBudget and a HorizontalPodAutoscaler each, a headless Service.
REPLICATED = ("gateway", "llm", "nlp", "vision", "ensemble", "multimodal", "http")
#: Processes that call other mesh members, with the mesh's own API key.
MESH_KEY_HOLDERS = ("gateway", "llm", "nlp", "vision", "ensemble", "multimodal", "finetune")
KEYS_FILE_HOLDERS = ("gateway", "registry")
PART_OF = {"app.kubernetes.io/part-of": "aisemble"}
ENVIRONMENT = {
    "AISEMBLE_CONFIG_DIR": "/etc/aisemble/config",
    "AISEMBLE_STATE_DIR": "/var/lib/aisemble",
    "AISEMBLE_MODEL_STORE": "/models",
}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


KUSTOMIZATION: dict[str, Any] = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text(encoding="utf-8"))
#: The manifests as written, before kustomize.
RAW = [doc for name in KUSTOMIZATION["resources"] for doc in _documents(DEPLOY / name)]
MESH: dict[str, Any] = yaml.safe_load((DEPLOY / "mesh.yaml").read_text(encoding="utf-8"))
README = (DEPLOY / "README.md").read_text(encoding="utf-8")


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload (None for other kinds)."""
    return obj["spec"]["template"]["spec"] if obj["kind"] in WORKLOADS else None


def containers(obj: dict[str, Any], init: bool = True) -> list[dict[str, Any]]:
    """A workload's containers (and its init containers when `init`)."""
    spec = pod_spec(obj)
    if spec is None:
        return []
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def _image_name(image: str) -> str:
    """An image reference without its tag or digest, as kustomize's `images` matches it."""
    image = image.split("@", 1)[0]
    head, _, tail = image.rpartition(":")
    return head if head and "/" not in tail else image


def render() -> list[dict[str, Any]]:
    """What `kustomize build deploy/kubernetes` gives, as far as these checks need: the namespace on every
    namespaced object, the `images` override and the generated ConfigMaps (without their hash suffix)."""
    objects = copy.deepcopy(RAW)
    images = {entry["name"]: entry for entry in KUSTOMIZATION.get("images", [])}
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = KUSTOMIZATION["namespace"]
        for container in containers(obj):
            entry = images.get(_image_name(container["image"]))
            if entry is not None:
                container["image"] = f"{entry.get('newName', entry['name'])}:{entry['newTag']}"
    for generator in KUSTOMIZATION.get("configMapGenerator", []):
        data = {Path(f).name: (DEPLOY / f).read_text(encoding="utf-8") for f in generator["files"]}
        metadata = {"name": generator["name"], "namespace": KUSTOMIZATION["namespace"]}
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    return objects


RENDERED = render()


def named(kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in RENDERED if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in RENDERED if o["kind"] == kind]


def component(obj: dict[str, Any]) -> str:
    return obj["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def servers() -> dict[str, dict[str, Any]]:
    """component -> its workload, for every workload that runs `aisemble serve`."""
    found: dict[str, dict[str, Any]] = {}
    for obj in RENDERED:
        if obj["kind"] in WORKLOADS and containers(obj, init=False)[0].get("args", [""])[0] == "serve":
            assert component(obj) not in found, f"two workloads serve {component(obj)}"
            found[component(obj)] = obj
    return found


def flag(container: dict[str, Any], name: str) -> str:
    args = container["args"]
    assert name in args, f"{container['name']}: no {name} in {args}"
    return args[args.index(name) + 1]


def kn(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def mesh_ports() -> dict[str, int]:
    """component -> the port mesh.yaml gives it."""

    def port(address: str) -> int:
        return int(address.rpartition(":")[2])

    ports = {"gateway": port(MESH["gateway"]["addresses"][0]), "registry": port(MESH["registry"]["addresses"][0])}
    ports |= {name: port(entry["addresses"][0]) for name, entry in MESH["services"].items()}
    ports["http"] = port(MESH["http"]["address"])
    return ports


def mesh_targets() -> list[tuple[str, str, int]]:
    """(component, Service name, port) of every dns:/// address in mesh.yaml."""
    sections = {"gateway": MESH["gateway"], "registry": MESH["registry"], **MESH["services"]}
    targets = []
    for name, section in sections.items():
        for address in section["addresses"]:
            match = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", address)
            assert match, f"mesh.yaml {name}: {address!r} is not dns:///<service>:<port>"
            targets.append((name, match[1], int(match[2])))
    return targets


def selects(selector: dict[str, str], workload: dict[str, Any]) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


_UNITS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | int) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(value))
    assert match and match[2] in _UNITS, f"not a quantity: {value!r}"
    return float(match[1]) * _UNITS[match[2]]


def schema_problem(obj: dict[str, Any]) -> str | None:
    """Why the Kubernetes API of KUBERNETES_VERSION would refuse the object (unknown fields included); None: valid."""
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{kn(obj)}: {'.'.join(str(p) for p in exc.path)}: {exc.message}"
    return None


@pytest.mark.parametrize("obj", RENDERED, ids=kn)
def test_every_object_is_valid_for_kubernetes_strictly(obj):
    assert schema_problem(obj) is None


def test_every_server_container_has_grpc_startup_liveness_and_readiness_probes_on_the_health_port():
    for obj in servers().values():
        for container in containers(obj, init=False):
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                grpc = container.get(probe, {}).get("grpc")
                assert grpc is not None, f"{kn(obj)} {container['name']}: no gRPC {probe}"
                assert grpc["port"] == HEALTH_PORT, f"{kn(obj)} {container['name']}: {probe} not on {HEALTH_PORT}"
                assert grpc.get("service", "") == "", f"{kn(obj)}: {probe} must ask the overall health"
            assert flag(container, "--health-port") == str(HEALTH_PORT)
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports.get("health") == HEALTH_PORT and ports.get("metrics") == METRICS_PORT


@pytest.mark.parametrize("name", MODEL_SERVICES)
def test_model_services_may_take_minutes_to_load(name):
    container = containers(servers()[name], init=False)[0]
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "llm and vision load for ~20 s on 2 cores"


def test_every_container_has_cpu_and_memory_requests_and_limits_within_each_other():
    for obj in RENDERED:
        for container in containers(obj):
            resources = container.get("resources", {})
            for resource in ("cpu", "memory"):
                request = resources.get("requests", {}).get(resource)
                limit = resources.get("limits", {}).get(resource)
                assert request is not None and limit is not None, f"{kn(obj)} {container['name']}: {resource}"
                assert quantity(request) <= quantity(limit), f"{kn(obj)} {container['name']}: {resource}"


def test_every_container_runs_the_one_image_set_once_in_the_kustomization():
    (entry,) = KUSTOMIZATION["images"]
    assert entry.get("newTag") and entry["newTag"] != "latest" and "digest" not in entry
    for obj in RAW:
        for container in containers(obj):
            assert container["image"] == entry["name"], f"{kn(obj)} {container['name']}: {container['image']}"
    rendered = {c["image"] for obj in RENDERED for c in containers(obj)}
    assert rendered == {f"{entry['newName']}:{entry['newTag']}"}


def test_no_secret_material_in_the_manifests_and_every_secret_used_is_documented():
    assert not [kn(o) for o in RENDERED if o["kind"] == "Secret"], "Secrets are made by the README's commands"
    assert "secretGenerator" not in KUSTOMIZATION
    used: set[str] = set()
    for obj in RENDERED:
        spec = pod_spec(obj)
        if spec is None:
            continue
        used |= {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
        for container in containers(obj):
            for variable in container.get("env", []):
                if "secretKeyRef" in variable.get("valueFrom", {}):
                    used.add(variable["valueFrom"]["secretKeyRef"]["name"])
            used |= {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
    assert used >= {"aisemble-api-keys", "aisemble-mesh-key"}
    undocumented = [name for name in sorted(used) if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", README)]
    assert not undocumented, f"Secrets not in deploy/kubernetes/README.md: {undocumented}"


def test_every_configmap_and_claim_a_pod_mounts_exists():
    configmaps = {o["metadata"]["name"] for o in of_kind("ConfigMap")}
    claims = {o["metadata"]["name"] for o in of_kind("PersistentVolumeClaim")}
    for obj in RENDERED:
        spec = pod_spec(obj)
        if spec is None:
            continue
        templates = {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for volume in volumes.values():
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, f"{kn(obj)}: {volume}"
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, f"{kn(obj)}: {volume}"
        for container in containers(obj):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes.keys() | templates, f"{kn(obj)} {container['name']}: {mount}"


def test_listen_addresses_and_service_ports_are_those_of_mesh_yaml():
    ports = mesh_ports()
    found = servers()
    assert set(found) == set(ports), "one workload per process of mesh.yaml"
    for name, obj in found.items():
        container = containers(obj, init=False)[0]
        assert flag(container, "--address") == f"0.0.0.0:{ports[name]}", kn(obj)
        assert flag(container, "--metrics-port") == str(METRICS_PORT)
        assert ports[name] in {p["containerPort"] for p in container["ports"]}, kn(obj)
        assert container["args"][:2] == ["serve", name], kn(obj)
    for name in ("gateway", "registry", *MESH["services"]):
        section = MESH.get(name) or MESH["services"][name]
        assert section["metrics_port"] == METRICS_PORT, f"mesh.yaml {name}: metrics_port"
    for service in of_kind("Service"):
        (workload,) = [w for w in found.values() if selects(service["spec"]["selector"], w)]
        container_ports = {p["name"]: p["containerPort"] for p in containers(workload, init=False)[0]["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports, f"{kn(service)}: {port}"
            if port["name"] in ("grpc", "http"):
                assert port["port"] == ports[component(workload)], f"{kn(service)}: {port}"
            if port["name"] == "metrics":
                assert port["port"] == METRICS_PORT


def test_every_dns_address_of_mesh_yaml_names_a_service_with_that_port():
    found = servers()
    for name, service_name, port in mesh_targets():
        service = named("Service", service_name)
        assert port in {p["port"] for p in service["spec"]["ports"]}, f"{service_name} has no port {port}"
        assert selects(service["spec"]["selector"], found[name]), f"{service_name} does not select {name}"
        if name in REPLICATED:
            assert service["spec"].get("clusterIP") == "None", f"{service_name}: replicated, must be headless"
    assert len(MESH["registry"]["addresses"]) == 1, "the registry is the one writer"
    assert named("Service", "aisemble-gateway")["spec"]["ports"][0]["port"] == mesh_ports()["gateway"]
    assert named("Service", "aisemble-http")["spec"]["ports"][0]["port"] == mesh_ports()["http"]


def _policies_for(name: str) -> list[dict[str, Any]]:
    return [
        p
        for p in of_kind("NetworkPolicy")
        if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component") == name
    ]


def _sources(rule: dict[str, Any]) -> set[str]:
    """The components a rule admits (from pod selectors of this namespace)."""
    names: set[str] = set()
    for peer in rule.get("from", []):
        assert set(peer) == {"podSelector"}, f"only pod selectors of the namespace: {peer}"
        selector = peer["podSelector"]
        if "app.kubernetes.io/component" in selector.get("matchLabels", {}):
            names.add(selector["matchLabels"]["app.kubernetes.io/component"])
        for expression in selector.get("matchExpressions", []):
            assert expression["key"] == "app.kubernetes.io/component" and expression["operator"] == "In"
            names |= set(expression["values"])
    return names


ALLOWED_CALLERS = {
    **{name: {"gateway", "ensemble", "multimodal"} for name in MODEL_SERVICES},
    "ensemble": {"gateway"},
    "multimodal": {"gateway"},
    "finetune": {"gateway"},
    "registry": {"gateway", *MODEL_SERVICES, "finetune"},
}


def test_network_policies_deny_by_default_and_admit_only_the_callers_of_each_service():
    deny = [p for p in of_kind("NetworkPolicy") if p["spec"]["podSelector"] == {}]
    assert any(p["spec"]["policyTypes"] == ["Ingress"] and not p["spec"].get("ingress") for p in deny)
    ports = mesh_ports()
    for name, callers in ALLOWED_CALLERS.items():
        (policy,) = _policies_for(name)
        rules = policy["spec"]["ingress"]
        assert all(_sources(rule) == callers for rule in rules), f"{kn(policy)}: callers"
        assert {p["port"] for rule in rules for p in rule["ports"]} == {ports[name]}, f"{kn(policy)}: ports"
    for name in ("gateway", "http"):
        (policy,) = _policies_for(name)
        assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": ports[name]}]}]
    shared = [p for p in of_kind("NetworkPolicy") if p["spec"]["podSelector"].get("matchLabels") == PART_OF]
    rules = [rule for policy in shared for rule in policy["spec"]["ingress"]]
    open_ports = {p["port"] for rule in rules if "from" not in rule for p in rule["ports"]}
    assert HEALTH_PORT in open_ports, "the kubelet probes every pod's health port from the node"
    assert any(METRICS_PORT in {p["port"] for p in rule["ports"]} for rule in rules), "Prometheus scrapes metrics"


@pytest.mark.parametrize("name", REPLICATED)
def test_stateless_processes_have_a_disruption_budget_and_an_autoscaler(name):
    workload = servers()[name]
    assert workload["kind"] == "Deployment" and "replicas" not in workload["spec"], "the autoscaler owns the count"
    (budget,) = [b for b in of_kind("PodDisruptionBudget") if selects(b["spec"]["selector"]["matchLabels"], workload)]
    assert budget["spec"]["minAvailable"] == 1
    scalers = of_kind("HorizontalPodAutoscaler")
    (scaler,) = [h for h in scalers if h["spec"]["scaleTargetRef"]["name"] == workload["metadata"]["name"]]
    assert scaler["apiVersion"] == "autoscaling/v2" and scaler["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert scaler["spec"]["minReplicas"] >= 2, "two replicas at least: a drain then never stops the service"
    (metric,) = scaler["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"


def test_the_registry_is_one_statefulset_replica_with_its_own_volume():
    registry = servers()["registry"]
    assert registry["kind"] == "StatefulSet" and registry["spec"]["replicas"] == 1
    (template,) = registry["spec"]["volumeClaimTemplates"]
    mounts = {m["mountPath"]: m["name"] for m in containers(registry, init=False)[0]["volumeMounts"]}
    assert mounts["/var/lib/aisemble"] == template["metadata"]["name"]
    assert named("Service", registry["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler"):
        for obj in of_kind(kind):
            target = obj["spec"].get("selector", {}).get("matchLabels") or {}
            assert (
                not selects(target, registry)
                and obj["spec"].get("scaleTargetRef", {}).get("name") != registry["metadata"]["name"]
            )


def _volume(obj: dict[str, Any], mount_path: str, container: dict[str, Any] | None = None) -> dict[str, Any]:
    container = container or containers(obj, init=False)[0]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == mount_path]
    claims = [
        {"name": c["metadata"]["name"], "volumeClaimTemplate": c} for c in obj["spec"].get("volumeClaimTemplates", [])
    ]
    (volume,) = [v for v in [*pod_spec(obj)["volumes"], *claims] if v["name"] == mount["name"]]  # type: ignore[index]
    return {**volume, "readOnly": mount.get("readOnly", False)}


def test_the_model_store_is_shared_read_only_by_readers_and_written_by_the_job_and_finetune():
    store = named("PersistentVolumeClaim", "aisemble-models")
    assert set(store["spec"]["accessModes"]) & {"ReadWriteMany", "ReadOnlyMany"}
    job = named("Job", "aisemble-models-prepare")
    assert containers(job)[0]["args"][:2] == ["models", "prepare"]
    for writer in (job, servers()["finetune"]):
        volume = _volume(writer, "/models")
        assert volume["persistentVolumeClaim"]["claimName"] == "aisemble-models" and not volume["readOnly"]
    for name in (*MODEL_SERVICES, "registry"):
        for container in containers(servers()[name]):
            volume = _volume(servers()[name], "/models", container)
            assert volume["readOnly"] and volume["persistentVolumeClaim"].get("readOnly"), f"{name} {container}"
    finetune = servers()["finetune"]
    assert finetune["spec"]["replicas"] == 1 and finetune["spec"]["strategy"]["type"] == "Recreate"
    assert "persistentVolumeClaim" in _volume(finetune, "/var/lib/aisemble")


def test_labels_and_a_locked_down_security_context_everywhere():
    for obj in RENDERED:
        if obj["kind"] != "ConfigMap":  # generated by kustomize
            assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "aisemble", kn(obj)
        spec = pod_spec(obj)
        if spec is None:
            continue
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert {"app.kubernetes.io/name", "app.kubernetes.io/component"} <= labels.keys(), kn(obj)
        assert PART_OF.items() <= labels.items(), kn(obj)
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["enableServiceLinks"] is False, "Service links would set AISEMBLE_*_PORT variables"
        assert spec["automountServiceAccountToken"] is False
        for container in containers(obj):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            tmp = _volume(obj, "/tmp", container)
            assert "emptyDir" in tmp and not tmp["readOnly"], f"{kn(obj)} {container['name']}: writable /tmp"


def test_every_container_has_the_mesh_environment_and_the_files_it_names_are_mounted():
    for obj in RENDERED:
        for container in containers(obj):
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert ENVIRONMENT.items() <= env.items(), f"{kn(obj)} {container['name']}"
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert {"/etc/aisemble/config", "/var/lib/aisemble", "/tmp"} <= mounts, f"{kn(obj)} {container['name']}"
    for name, obj in servers().items():
        container = containers(obj, init=False)[0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        secrets = {
            _volume(obj, path)["secret"]["secretName"]: path
            for path in {m["mountPath"] for m in container["volumeMounts"]}
            if "secret" in _volume(obj, path)
        }
        assert secrets.get(f"aisemble-certs-{name}") == "/etc/aisemble/certs", f"{name}: its own certificates"
        assert (env.get("AISEMBLE_KEYS_FILE") == "/etc/aisemble/keys/keys.json") == (name in KEYS_FILE_HOLDERS)
        assert (env.get("AISEMBLE_API_KEY_FILE") == "/etc/aisemble/mesh-key/mesh.key") == (name in MESH_KEY_HOLDERS)
        if name in KEYS_FILE_HOLDERS:
            assert secrets["aisemble-api-keys"] == "/etc/aisemble/keys"
        if name in MESH_KEY_HOLDERS:
            assert secrets["aisemble-mesh-key"] == "/etc/aisemble/mesh-key"
    security = MESH["security"]
    assert security["mtls"] is True and security["certs_dir"] == "/etc/aisemble/certs"


@pytest.mark.parametrize("name", ["models.yaml", "selection.yaml"])
def test_the_config_copies_are_the_repository_configs(name):
    copied = (DEPLOY / "config" / name).read_text(encoding="utf-8")
    assert copied == (ROOT / "configs" / name).read_text(encoding="utf-8"), (
        f"deploy/kubernetes/config/{name} differs from configs/{name}: cp configs/{name} deploy/kubernetes/config/"
    )


def test_mesh_yaml_loads_with_the_mesh_loader(monkeypatch):
    # Needs the loader that knows the `registry` and `http` sections and dns:/// addresses.
    from aisemble.config.mesh import load_mesh

    monkeypatch.delenv("AISEMBLE_GATEWAY_ADDR", raising=False)
    mesh = load_mesh(DEPLOY / "mesh.yaml")
    assert mesh.gateway.addresses == tuple(MESH["gateway"]["addresses"])
    assert mesh.registry.addresses == ("dns:///aisemble-registry:50060",)
    assert set(mesh.services) == set(MESH["services"])
    assert mesh.security.mtls and str(mesh.security.certificates()) == "/etc/aisemble/certs"


def _pip_installs(lines: list[str], command: str, project: str) -> list[list[str]]:
    """The arguments of each line that starts with `command` (pip install), without --quiet / --index-url, the
    project as `.`; pip's own upgrade left out."""
    installs = []
    for line in (line.strip() for line in lines):
        if not line.startswith(command) or "--upgrade pip" in line:
            continue
        words = line.removeprefix(command).split("2>&1")[0].split()
        if "--index-url" in words:
            del words[words.index("--index-url") : words.index("--index-url") + 2]
        installs.append(["." if w == project else w for w in words if w != "--quiet"])
    return installs


def test_the_dockerfile_installs_what_the_makefile_installs_in_the_same_order():
    from packaging.specifiers import SpecifierSet

    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines()
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
    recipe = makefile[next(i for i, line in enumerate(makefile) if line.startswith("$(STAMP):")) :]
    recipe = recipe[: next(i for i, line in enumerate(recipe) if line.strip() == "touch $@")]
    installs = _pip_installs(recipe, "$(PIP) install", "'.[dev]'")
    assert len(installs) == 4 and _pip_installs(dockerfile, "RUN pip install", "/app") == installs
    (base,) = [line.split()[1] for line in dockerfile if line.startswith("FROM ")]
    python = re.fullmatch(r"python:(\d+\.\d+)-slim", base)
    assert python, f"the base image {base} is not python:<version>-slim"
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    required = re.search(r'^requires-python = "([^"]+)"', pyproject, re.MULTILINE)
    assert required and SpecifierSet(required[1]).contains(f"{python[1]}.0"), "pip would refuse the project"
