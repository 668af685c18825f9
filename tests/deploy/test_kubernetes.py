"""deploy/kubernetes, checked offline (no cluster): every overlay rendered, validated against the
Kubernetes JSON schemas (kubernetes-validate), and held to what the processes need: probes that
reach the real port, resources, restricted security contexts, headless Services behind every
``dns:///`` address, environment variables the code reads, and certificates naming the identities
gateway_common/identity.py checks."""

from __future__ import annotations

import base64
import dataclasses
import functools
import importlib.util
import inspect
import ipaddress
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from cryptography import x509

from gateway_common import config as gateway_config
from gateway_common.config import load_config
from gateway_common.identity import ALLOWED_CALLERS, spiffe_id
from tests.deploy.kustomize import CLUSTER_SCOPED, build, identity, split_image

ROOT = Path(__file__).parents[2]
KUBERNETES = ROOT / "deploy/kubernetes"
README = (KUBERNETES / "README.md").read_text(encoding="utf-8")
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")

OVERLAYS = ("overlays/dev", "overlays/production")
RENDERED = ("base", *OVERLAYS)
NAMESPACE = "llm-gateway"
IMAGE = "llm-gateway"
"""The image name the base gives every gateway process (overlays rename and tag it)."""

GRPC_PORTS = {"router": 50051, "auth": 50052, "ratelimit": 50053, "providers": 50054, "metering": 50055}
PROCESSES = (*GRPC_PORTS, "edge")
AUTOSCALED = {"router": "StatefulSet", "providers": "Deployment", "edge": "Deployment"}
STORES = {"redis", "postgres"}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")

# The oldest Kubernetes the manifests support (matchLabelKeys and StatefulSet PVC retention are on
# by default from 1.27; 1.29 is the oldest release still maintained by most providers) and the
# newest kubernetes-validate ships schemas for.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())

Resource = dict[str, Any]


@functools.cache
def render(folder: str) -> tuple[Resource, ...]:
    """``folder`` rendered as kustomize renders it."""
    return tuple(build(KUBERNETES / folder))


def objects(folder: str, kind: str) -> dict[str, Resource]:
    """The rendered objects of one kind, by name."""
    return {r["metadata"]["name"]: r for r in render(folder) if r["kind"] == kind}


def workloads(folder: str) -> dict[str, Resource]:
    """Deployments and StatefulSets, by name."""
    return {r["metadata"]["name"]: r for r in render(folder) if r["kind"] in WORKLOAD_KINDS}


def gateway_workloads(folder: str) -> dict[str, Resource]:
    """The workloads that run the gateway's image (the stores run their own)."""
    return {name: w for name, w in workloads(folder).items() if name not in STORES}


def pod(workload: Resource) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container(workload: Resource) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod(workload)["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']}: one process per pod"
    return containers[0]


def every(folders: tuple[str, ...] = RENDERED) -> list[Any]:
    """pytest params (folder, name) for every gateway workload of every rendering."""
    return [pytest.param(f, name, id=f"{f}:{name}") for f in folders for name in gateway_workloads(f)]


def every_workload(folders: tuple[str, ...] = RENDERED) -> list[Any]:
    """pytest params (folder, name) for every workload, the stores' included."""
    return [pytest.param(f, name, id=f"{f}:{name}") for f in folders for name in workloads(f)]


def environment(folder: str, workload: Resource) -> dict[str, Any]:
    """The container's environment: ConfigMap values it loads with envFrom, then its own ``env``
    (a plain value as a str, a reference as its ``valueFrom``)."""
    configmaps = objects(folder, "ConfigMap")
    env: dict[str, Any] = {}
    for source in container(workload).get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in configmaps, f"envFrom names ConfigMap {name}, which is not rendered"
        env.update(configmaps[name]["data"])
    for entry in container(workload).get("env", []):
        env[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return env


def port_of(workload: Resource, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container(workload).get("ports", [])}
    assert name in ports, f"{workload['metadata']['name']} has no port named {name}"
    return int(ports[name])


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _runnable(module: str) -> bool:
    """Whether ``python -m module`` finds code in this repository (a package needs its __main__)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return False
    if spec.submodule_search_locations is not None:
        return _runnable(f"{module}.__main__")
    return Path(spec.origin).resolve().is_relative_to(ROOT)


# -- rendering and schemas -------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("folder", RENDERED)
def test_renders_as_kubectl_kustomize_does(folder: str) -> None:
    """The Python renderer every other test relies on agrees with kustomize itself."""
    output = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES / folder)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    theirs = {identity(r): r for r in yaml.safe_load_all(output)}
    ours = {identity(r): r for r in render(folder)}
    assert sorted(ours) == sorted(theirs)
    assert [key for key in ours if ours[key] != theirs[key]] == []


_schema_contents = functools.cache(kubernetes_validate.utils.schema_contents)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("folder", OVERLAYS)
def test_every_object_follows_the_kubernetes_schemas(
    folder: str, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # kubernetes-validate parses its (megabytes of) shared definitions again for every object;
    # read each file once instead (the parsed schemas are only read).
    monkeypatch.setattr(kubernetes_validate.utils, "schema_contents", _schema_contents)
    errors = []
    for resource in render(folder):
        if resource["apiVersion"].startswith("cert-manager.io/"):
            continue  # not in Kubernetes' schemas: test_cert_manager_objects_have_their_shape
        try:
            # strict: a misspelt or misplaced field is an error, not silently dropped by the API server.
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{resource['kind']}/{resource['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert errors == []


@pytest.mark.parametrize("folder", RENDERED)
def test_everything_lives_in_the_gateways_namespace(folder: str) -> None:
    for resource in render(folder):
        expected = None if resource["kind"] in CLUSTER_SCOPED else NAMESPACE
        assert resource["metadata"].get("namespace") == expected, identity(resource)
    assert list(objects(folder, "Namespace")) == [NAMESPACE]


@pytest.mark.parametrize("folder", RENDERED)
def test_no_secret_is_committed(folder: str) -> None:
    assert objects(folder, "Secret") == {}
    for resource in render(folder):
        if resource["kind"] == "ConfigMap":
            text = yaml.safe_dump(resource["data"])
            assert not re.search(r"(?i)(api_key|password|secret|kek)\s*:", text), resource["metadata"]["name"]


# -- the processes ----------------------------------------------------------------------------


@pytest.mark.parametrize("folder", RENDERED)
def test_every_process_runs_as_a_workload_with_a_service(folder: str) -> None:
    assert set(gateway_workloads(folder)) == set(PROCESSES)
    services = objects(folder, "Service")
    for name, workload in workloads(folder).items():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
        service = services[name]
        assert service["spec"]["selector"].items() <= labels.items(), f"Service {name} selects no pod of {name}"
        for port in service["spec"]["ports"]:
            port_of(workload, port["targetPort"])


@pytest.mark.parametrize(("folder", "name"), every())
def test_runs_the_module_of_the_process_from_the_one_image(folder: str, name: str) -> None:
    workload = gateway_workloads(folder)[name]
    argv = container(workload)["command"]
    expected = "edge" if name == "edge" else f"services.{name}"
    assert argv == ["python", "-m", expected]
    assert _runnable(expected)
    images = {split_image(container(w)["image"])[0] for w in gateway_workloads(folder).values()}
    assert len(images) == 1, f"every process runs the one image built from the Dockerfile: {images}"
    if folder == "base":
        assert container(workload)["image"] == IMAGE


def test_the_image_exposes_every_port_the_pods_listen_on() -> None:
    exposed = {int(p) for line in DOCKERFILE.splitlines() if line.startswith("EXPOSE") for p in line.split()[1:]}
    for name, workload in gateway_workloads("base").items():
        assert port_of(workload, "http" if name == "edge" else "grpc") in exposed, name


# -- probes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("folder", "name"), every_workload())
def test_every_container_has_readiness_and_liveness_probes(folder: str, name: str) -> None:
    spec = container(workloads(folder)[name])
    for probe in ("readinessProbe", "livenessProbe"):
        assert probe in spec, f"{name} has no {probe}"
        handlers = {"exec", "httpGet", "tcpSocket", "grpc"} & set(spec[probe])
        assert len(handlers) == 1, f"{name}.{probe}"


@pytest.mark.parametrize(("folder", "name"), [p for p in every() if p.values[1] != "edge"])
def test_grpc_probes_run_the_tls_health_client_on_the_port_the_service_listens_on(folder: str, name: str) -> None:
    workload = gateway_workloads(folder)[name]
    port = port_of(workload, "grpc")
    listen = environment(folder, workload)[f"GATEWAY_{name.upper()}_LISTEN"]
    assert _host_port(listen) == ("0.0.0.0", port) and port == GRPC_PORTS[name]
    # The kubelet's grpc probe shows no client certificate; the services demand one.
    expected = ["python", "-m", "gateway_common.healthcheck", str(port), "127.0.0.1", name]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container(workload)[probe]["exec"]["command"] == expected, probe
    assert _runnable("gateway_common.healthcheck")


def test_the_edge_is_probed_on_its_health_and_readiness_routes() -> None:
    # Read from the source: building the app would import the whole edge for two paths.
    routes = set(re.findall(r'@app\.get\("(/[a-z]+)"', (ROOT / "edge/app.py").read_text(encoding="utf-8")))
    assert {"/health", "/ready"} <= routes
    for folder in RENDERED:
        workload = gateway_workloads(folder)["edge"]
        spec = container(workload)
        port = port_of(workload, "http")
        assert int(environment(folder, workload)["GATEWAY_EDGE_PORT"]) == port
        assert environment(folder, workload)["GATEWAY_EDGE_HOST"] == "0.0.0.0"
        paths = {}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = spec[probe]["httpGet"]
            assert get["port"] in ("http", port)
            assert get["path"] in routes
            paths[probe] = get["path"]
        # Alive while the process answers; ready only while what it calls is.
        assert paths == {"startupProbe": "/health", "readinessProbe": "/ready", "livenessProbe": "/health"}


# -- resources, security, lifecycle ------------------------------------------------------------


_UNITS = {"m": 1e-3, "": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _quantity(value: str | int) -> float:
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match is not None, f"{value!r} is not a quantity"
    return float(match[1]) * _UNITS[match[2]]


@pytest.mark.parametrize(("folder", "name"), every_workload())
def test_every_container_requests_and_limits_cpu_and_memory(folder: str, name: str) -> None:
    resources = container(workloads(folder)[name])["resources"]
    for resource in ("cpu", "memory"):
        request, limit = resources["requests"][resource], resources["limits"][resource]
        assert 0 < _quantity(request) <= _quantity(limit), f"{name} {resource}: {request} / {limit}"


@pytest.mark.parametrize(("folder", "name"), every_workload())
def test_every_pod_runs_restricted(folder: str, name: str) -> None:
    workload = workloads(folder)[name]
    pod_context = pod(workload).get("securityContext", {})
    context = {**pod_context, **container(workload).get("securityContext", {})}
    assert context.get("runAsNonRoot") is True
    assert context.get("allowPrivilegeEscalation") is False
    assert context.get("readOnlyRootFilesystem") is True
    assert context.get("capabilities") == {"drop": ["ALL"]}
    assert context.get("seccompProfile") == {"type": "RuntimeDefault"}
    assert not context.get("privileged")
    assert pod(workload).get("automountServiceAccountToken") is False, "no pod here talks to the API server"


@pytest.mark.parametrize(("folder", "name"), every())
def test_gateway_pods_run_as_the_images_user(folder: str, name: str) -> None:
    uid = re.search(r"useradd [^\n]*--uid (\d+)", DOCKERFILE)
    assert uid is not None
    context = pod(gateway_workloads(folder)[name])["securityContext"]
    # fsGroup: the mounted certificate key (0440) and the spool volume belong to the process.
    assert context["runAsUser"] == context["fsGroup"] == int(uid[1])


def _volume_sources(workload: Resource) -> dict[str, str]:
    """Volume name -> its source (``emptyDir``, ``secret``, …; ``claim`` for a volumeClaimTemplate)."""
    sources = {v["name"]: next(k for k in v if k != "name") for v in pod(workload).get("volumes", [])}
    for claim in workload["spec"].get("volumeClaimTemplates", []):
        sources[claim["metadata"]["name"]] = "claim"
    return sources


def _mounts(workload: Resource) -> dict[str, tuple[str, bool]]:
    """Mount path -> (volume source, read-only)."""
    sources = _volume_sources(workload)
    mounts = {}
    for mount in container(workload).get("volumeMounts", []):
        assert mount["name"] in sources, f"mount {mount['mountPath']} names no volume"
        mounts[mount["mountPath"]] = (sources[mount["name"]], bool(mount.get("readOnly")))
    return mounts


def _writable_at(workload: Resource, path: str) -> str | None:
    """The source of the writable volume holding ``path``, or None (the read-only root)."""
    best = None
    for mount_path, (source, read_only) in _mounts(workload).items():
        if PurePosixPath(path).is_relative_to(mount_path) and (best is None or len(mount_path) > len(best[0])):
            best = (mount_path, None if read_only else source)
    return None if best is None else best[1]


@pytest.mark.parametrize(("folder", "name"), every_workload())
def test_only_scratch_and_data_volumes_are_writable(folder: str, name: str) -> None:
    for path, (source, read_only) in _mounts(workloads(folder)[name]).items():
        assert read_only or source in ("emptyDir", "claim"), f"{name}: {path} ({source}) is mounted writable"


@pytest.mark.parametrize(("folder", "name"), every())
def test_what_a_process_writes_is_on_a_writable_volume(folder: str, name: str, config_dir: Path) -> None:
    workload = gateway_workloads(folder)[name]
    config = load_config(env=_resolved(folder, workload, config_dir))
    assert _writable_at(workload, "/tmp") == "emptyDir"
    # The embedded defaults' folder (the image's WORKDIR /app): the demo key, when no key is set.
    assert "WORKDIR /app" in DOCKERFILE
    assert _writable_at(workload, "/app/.gateway/demo-key") == "emptyDir"
    if name == "auth":
        # A generated KEK would be per pod (and die with it): the KEK comes from a Secret.
        assert isinstance(environment(folder, workload)["GATEWAY_CREDENTIALS_KEK"], dict)
    if name == "router":
        assert _writable_at(workload, config.metering.spool_path) == "claim"
        assert _writable_at(workload, config.router.jobs.path) == "claim"


def test_each_router_keeps_its_usage_spool_on_a_volume_of_its_own(config_dir: Path) -> None:
    """The spool is what keeps "nothing lost" true: it must outlive the pod, not only the container."""
    for folder in RENDERED:
        router = gateway_workloads(folder)["router"]
        assert router["kind"] == "StatefulSet", "a claim per pod (volumeClaimTemplates) needs a StatefulSet"
        assert router["spec"]["serviceName"] == "router"
        claims = {c["metadata"]["name"]: c for c in router["spec"]["volumeClaimTemplates"]}
        spool = load_config(env=_resolved(folder, router, config_dir)).metering.spool_path
        assert "{hostname}" not in spool, "a volume per pod: no other router's file to adopt there"
        mount = next(
            m for m in container(router)["volumeMounts"] if PurePosixPath(spool).is_relative_to(m["mountPath"])
        )
        assert mount["name"] in claims and claims[mount["name"]]["spec"]["accessModes"] == ["ReadWriteOnce"]
        # A claim outlives a scale-down: the events left in it wait for router-N to come back.
        assert router["spec"]["persistentVolumeClaimRetentionPolicy"] == {
            "whenDeleted": "Retain",
            "whenScaled": "Retain",
        }


def _drain_s() -> dict[str, float]:
    """The longest each process takes to stop after SIGTERM, from the code's own defaults."""
    from gateway_common.grpc_server import ServiceApp
    from services.router.usage_shipper import UsageShipper

    grace = next(f.default for f in dataclasses.fields(ServiceApp) if f.name == "grace_s")
    shipping = inspect.signature(UsageShipper.drain).parameters["timeout_s"].default
    edge_main = (ROOT / "edge/__main__.py").read_text(encoding="utf-8")
    uvicorn = re.search(r"timeout_graceful_shutdown=(\d+)", edge_main)
    assert uvicorn is not None
    drains = {name: float(grace) for name in GRPC_PORTS}
    drains["router"] = float(grace + shipping)
    drains["edge"] = float(uvicorn[1])
    return drains


@pytest.mark.parametrize(("folder", "name"), every())
def test_pods_get_longer_to_stop_than_the_process_takes_to_drain(folder: str, name: str) -> None:
    workload = gateway_workloads(folder)[name]
    pre_stop = container(workload).get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    waited = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    assert pod(workload)["terminationGracePeriodSeconds"] >= waited + _drain_s()[name] + 5, name


# -- addresses and Services -------------------------------------------------------------------


@pytest.mark.parametrize(("folder", "name"), every())
def test_every_address_is_a_headless_service_on_the_port_its_process_listens_on(folder: str, name: str) -> None:
    services = objects(folder, "Service")
    env = environment(folder, gateway_workloads(folder)[name])
    addresses = {v: env[v] for v in env if re.fullmatch(r"GATEWAY_[A-Z]+_ADDR", v)}
    assert {v.split("_")[1].lower() for v in addresses} == set(GRPC_PORTS), "the whole address table"
    for variable, address in addresses.items():
        target = variable.split("_")[1].lower()
        match = re.fullmatch(r"dns:///([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", address)
        assert match, f"{variable}={address}: clients resolve every pod with dns:///NAME.NAMESPACE.svc.cluster.local"
        service_name, namespace, port = match[1], match[2], int(match[3])
        assert namespace == NAMESPACE
        service = services[service_name]
        assert service["spec"].get("clusterIP") == "None", f"{service_name}: headless, or clients see one address"
        assert port in [p["port"] for p in service["spec"]["ports"]]
        listener = gateway_workloads(folder)[target]
        assert service["spec"]["selector"].items() <= listener["spec"]["template"]["metadata"]["labels"].items()
        served = next(p for p in service["spec"]["ports"] if p["port"] == port)
        assert port_of(listener, served["targetPort"]) == port
        assert _host_port(environment(folder, listener)[f"GATEWAY_{target.upper()}_LISTEN"]) == ("0.0.0.0", port)


@pytest.mark.parametrize("folder", RENDERED)
def test_grpc_services_are_headless_and_the_edge_has_a_virtual_ip(folder: str) -> None:
    services = objects(folder, "Service")
    for name in GRPC_PORTS:
        assert services[name]["spec"].get("clusterIP") == "None", name
        assert [p.get("appProtocol") for p in services[name]["spec"]["ports"]] == ["grpc"]
    assert services["edge"]["spec"].get("clusterIP") != "None"
    assert services["edge"]["spec"].get("type", "ClusterIP") == "ClusterIP"


# -- environment and configuration -------------------------------------------------------------


def _variables_the_code_reads() -> set[str]:
    from services.auth import settings as auth_settings
    from services.auth.credentials import keyring
    from services.providers.registry import HTTP_FLAVOURS

    names = {"GATEWAY_CONFIG", *gateway_config._ENV_OVERRIDES, *gateway_config._MODEL_ROUTES_VARIABLES}
    names |= {auth_settings.TENANT_KEYS_ENV, auth_settings.ADMIN_KEY_ENV, keyring.KEK_ENV, keyring.KEK_FILE_ENV}
    for flavour in HTTP_FLAVOURS.values():
        names |= {name for name in (flavour.key_env, flavour.base_url_env) if name}
    return names


@pytest.mark.parametrize(("folder", "name"), every())
def test_every_variable_set_is_one_the_code_reads(folder: str, name: str) -> None:
    unknown = set(environment(folder, gateway_workloads(folder)[name])) - _variables_the_code_reads()
    assert unknown == set()


_PLACEHOLDERS = {
    "database-url": "postgresql://gateway:placeholder@postgres.llm-gateway.svc.cluster.local:5432/gateway",
    "redis-url": "redis://redis.llm-gateway.svc.cluster.local:6379/0",
    "credentials-kek": base64.b64encode(bytes(32)).decode(),
}


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the ConfigMaps' configuration files are written out for load_config to read."""
    return tmp_path_factory.mktemp("kubernetes-config")


def _resolved(folder: str, workload: Resource, config_dir: Path) -> dict[str, str]:
    """The environment the process gets, with Secret values replaced by placeholders of their shape
    and the configuration file pointing at the ConfigMap's copy in the repository."""
    resolved = {}
    for name, value in environment(folder, workload).items():
        if isinstance(value, str):
            resolved[name] = value
        elif "secretKeyRef" in value:
            key = value["secretKeyRef"]["key"]
            resolved[name] = _PLACEHOLDERS.get(key, f"placeholder-{key}")
    resolved["GATEWAY_CONFIG"] = str(_config_file(folder, environment(folder, workload)["GATEWAY_CONFIG"], config_dir))
    return resolved


def _config_file(folder: str, path: str, config_dir: Path) -> Path:
    """The mounted ConfigMap's file ``path``, written out where load_config can read it."""
    configmaps = objects(folder, "ConfigMap")
    for workload in gateway_workloads(folder).values():
        for mount in container(workload)["volumeMounts"]:
            if PurePosixPath(path).parent == PurePosixPath(mount["mountPath"]):
                volume = next(v for v in pod(workload)["volumes"] if v["name"] == mount["name"])
                data = configmaps[volume["configMap"]["name"]]["data"][PurePosixPath(path).name]
                out = config_dir / folder.replace("/", "-") / PurePosixPath(path).name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(data, encoding="utf-8")
                return out
    raise AssertionError(f"GATEWAY_CONFIG={path} is in no mounted ConfigMap")


@pytest.mark.parametrize(("folder", "name"), every())
def test_every_process_loads_the_configuration_it_is_given(folder: str, name: str, config_dir: Path) -> None:
    workload = gateway_workloads(folder)[name]
    config = load_config(env=_resolved(folder, workload, config_dir))
    assert (config.tls.internal, config.tls.dir) == ("on", "/certs")
    if name in ("auth", "metering"):
        assert getattr(config, name).database_url.startswith("postgresql://")
    if name in ("ratelimit", "router"):
        assert config.ratelimit.redis_url == config.router.redis_url == _PLACEHOLDERS["redis-url"]


@pytest.mark.parametrize(("folder", "name"), every())
def test_stores_and_key_material_are_required_secrets(folder: str, name: str) -> None:
    """Replicas must share what they keep: ratelimit's counters (the memory backend is per process),
    auth's and metering's rows, auth's KEK. A missing Secret must stop the pod, not start it on
    embedded defaults."""
    required = {
        "ratelimit": {"REDIS_URL"},
        "router": {"REDIS_URL"},
        "auth": {"DATABASE_URL", "GATEWAY_CREDENTIALS_KEK"},
        "metering": {"DATABASE_URL"},
    }.get(name, set())
    env = environment(folder, gateway_workloads(folder)[name])
    for variable in required:
        reference = env[variable]["secretKeyRef"]
        assert not reference.get("optional"), f"{name}: {variable} must not be optional"


@pytest.mark.parametrize(("folder", "name"), every())
def test_every_secret_referenced_is_documented(folder: str, name: str) -> None:
    workload = gateway_workloads(folder)[name]
    references = [v["secretKeyRef"] for v in environment(folder, workload).values() if isinstance(v, dict)]
    references += [
        {"name": v["secret"]["secretName"], "key": i["key"]}
        for v in pod(workload)["volumes"]
        if "secret" in v
        for i in v["secret"]["items"]
    ]
    for reference in references:
        secret = (
            reference["name"].replace(f"-{name}", "-NAME")
            if reference["name"].startswith("gateway-tls-")
            else reference["name"]
        )
        row = next(
            (
                line
                for line in README.splitlines()
                if line.startswith(f"| `{secret}` |") and f"`{reference['key']}`" in line
            ),
            None,
        )
        assert row is not None, (
            f"{name}: Secret {reference['name']} key {reference['key']} is not in deploy/kubernetes/README.md"
        )


# -- scaling -------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", RENDERED)
def test_the_request_path_is_autoscaled(folder: str) -> None:
    autoscalers = objects(folder, "HorizontalPodAutoscaler")
    targets = {h["spec"]["scaleTargetRef"]["name"]: h for h in autoscalers.values()}
    assert set(targets) == set(AUTOSCALED)
    for name, autoscaler in targets.items():
        assert autoscaler["apiVersion"] == "autoscaling/v2"
        reference = autoscaler["spec"]["scaleTargetRef"]
        assert (reference["apiVersion"], reference["kind"]) == ("apps/v1", AUTOSCALED[name])
        workload = gateway_workloads(folder)[name]
        assert workload["kind"] == AUTOSCALED[name]
        assert "replicas" not in workload["spec"], f"{name}: the autoscaler owns the count; an apply would reset it"
        assert 2 <= autoscaler["spec"]["minReplicas"] <= autoscaler["spec"]["maxReplicas"]
        for metric in autoscaler["spec"]["metrics"]:
            # Utilization is relative to the request: without one the autoscaler cannot compute it.
            assert container(workload)["resources"]["requests"][metric["resource"]["name"]]


@pytest.mark.parametrize("folder", RENDERED)
def test_the_other_services_run_replicated_with_disruption_budgets(folder: str) -> None:
    for name in set(GRPC_PORTS) - set(AUTOSCALED):
        assert gateway_workloads(folder)[name]["spec"]["replicas"] >= 2, name
    budgets = objects(folder, "PodDisruptionBudget")
    for name, workload in gateway_workloads(folder).items():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets.values() if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, name


def test_production_runs_more_replicas_against_external_stores() -> None:
    production, dev = gateway_workloads("overlays/production"), gateway_workloads("overlays/dev")
    for name in set(GRPC_PORTS) - set(AUTOSCALED):
        assert production[name]["spec"]["replicas"] > dev[name]["spec"]["replicas"], name
    minimum = {
        h["metadata"]["name"]: h["spec"]["minReplicas"]
        for h in objects("overlays/production", "HorizontalPodAutoscaler").values()
    }
    assert all(count >= 3 for count in minimum.values())
    assert STORES.isdisjoint(workloads("overlays/production")), "production uses external Redis and PostgreSQL"
    assert container(production["router"])["image"] != IMAGE, "production names the image in a registry"


def test_dev_runs_durable_stores_in_the_cluster() -> None:
    stores = workloads("overlays/dev")
    assert set(stores) >= STORES
    redis = container(stores["redis"])
    options = dict(zip(redis["command"][1::2], redis["command"][2::2], strict=False))
    assert options["--appendonly"] == "yes", "budgets of days and months must survive a restart"
    assert _writable_at(stores["redis"], options["--dir"] + "/appendonly.aof") == "claim"
    postgres = stores["postgres"]
    pgdata = {e["name"]: e.get("value") for e in container(postgres)["env"]}["PGDATA"]
    assert _writable_at(postgres, pgdata) == "claim"
    services = objects("overlays/dev", "Service")
    for key in ("database-url", "redis-url"):
        url = re.search(rf'{key}="?([^"\s]+)', README)
        assert url is not None, f"README shows the dev {key}"
        name, namespace, *_ = [*(urlsplit(url[1]).hostname or "").split("."), ""]
        assert name in services and namespace == NAMESPACE, f"the dev {key} names a Service of the dev overlay"


# -- service identity ----------------------------------------------------------------------------


CERT_MANAGER = "cert-manager.io/v1"
_CERTIFICATE_SPEC = {
    "secretName", "commonName", "uris", "dnsNames", "ipAddresses", "usages", "duration", "renewBefore",
    "privateKey", "issuerRef", "isCA", "subject", "emailAddresses", "secretTemplate", "keystores",
}  # fmt: skip
_USAGES = {"digital signature", "key encipherment", "server auth", "client auth", "cert sign", "crl sign"}


@pytest.mark.parametrize("folder", OVERLAYS)
def test_cert_manager_objects_have_their_shape(folder: str) -> None:
    """cert-manager's CRDs are not in Kubernetes' schemas: the fields the manifests use, checked here."""
    issuers = objects(folder, "Issuer")
    certificates = objects(folder, "Certificate")
    assert issuers and certificates
    for resource in (*issuers.values(), *certificates.values()):
        assert resource["apiVersion"] == CERT_MANAGER
    for name, issuer in issuers.items():
        kinds = set(issuer["spec"])
        assert len(kinds) == 1 and kinds <= {"selfSigned", "ca"}, name
        if "ca" in issuer["spec"]:
            signer = [c for c in certificates.values() if c["spec"]["secretName"] == issuer["spec"]["ca"]["secretName"]]
            assert [c["spec"].get("isCA") for c in signer] == [True], f"{name} signs with the CA certificate's Secret"
    for name, certificate in certificates.items():
        spec = certificate["spec"]
        assert set(spec) <= _CERTIFICATE_SPEC, f"{name}: {set(spec) - _CERTIFICATE_SPEC}"
        reference = spec["issuerRef"]
        assert reference == {"name": reference["name"], "kind": "Issuer", "group": "cert-manager.io"}
        assert reference["name"] in issuers, f"{name}: issuerRef names no Issuer"
        assert set(spec.get("usages", [])) <= _USAGES
        assert spec["privateKey"]["algorithm"] in ("RSA", "ECDSA", "Ed25519")
        for address in spec.get("ipAddresses", []):
            ipaddress.ip_address(address)
        for duration in ("duration", "renewBefore"):
            if duration in spec:
                assert re.fullmatch(r"(\d+h)?(\d+m)?(\d+s)?", spec[duration]), f"{name}.{duration}"
        if "renewBefore" in spec:
            assert _quantity(spec["renewBefore"].rstrip("h")) < _quantity(spec.get("duration", "2160h").rstrip("h"))


def _local_ca_sans(tmp_path: Path, name: str) -> tuple[set[str], set[str], set[str]]:
    """(URIs, DNS names, IPs) of the certificate `make up` and compose mint for process ``name``."""
    from gateway_common.tls import write_local_ca

    write_local_ca(tmp_path, [name])
    certificate = x509.load_pem_x509_certificate((tmp_path / f"{name}.crt").read_bytes())
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        set(sans.get_values_for_type(x509.UniformResourceIdentifier)),
        set(sans.get_values_for_type(x509.DNSName)),
        {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)},
    )


@pytest.mark.parametrize(("folder", "name"), every(OVERLAYS))
def test_each_process_mounts_a_certificate_naming_its_own_identity(folder: str, name: str, tmp_path: Path) -> None:
    workload = gateway_workloads(folder)[name]
    tls_dir = environment(folder, workload)["GATEWAY_TLS_DIR"]
    mount = next(m for m in container(workload)["volumeMounts"] if m["mountPath"] == tls_dir)
    assert mount.get("readOnly") is True
    volume = next(v for v in pod(workload)["volumes"] if v["name"] == mount["name"])["secret"]
    # The names gateway_common.tls.load_material reads in GATEWAY_TLS_DIR.
    assert {i["key"]: i["path"] for i in volume["items"]} == {
        "ca.crt": "ca.crt",
        "tls.crt": f"{name}.crt",
        "tls.key": f"{name}.key",
    }
    assert volume["defaultMode"] & 0o077 <= 0o040, "the key is not readable by others"

    certificate = next(
        c for c in objects(folder, "Certificate").values() if c["spec"]["secretName"] == volume["secretName"]
    )
    spec = certificate["spec"]
    assert spec["uris"] == [spiffe_id(name)], "the identity identity.py checks"
    assert spec["commonName"] == name
    assert {"server auth", "client auth"} <= set(spec["usages"]), "each certificate serves and calls"
    # Every name its clients dial: the address table's host for this service, and loopback (probes).
    dialled = {
        _host_port(v.removeprefix("dns:///"))[0]
        for k, v in environment(folder, workload).items()
        if k == f"GATEWAY_{name.upper()}_ADDR"
    }
    assert dialled <= set(spec["dnsNames"])
    uris, dns, ips = _local_ca_sans(tmp_path, name)
    assert uris == set(spec["uris"])
    assert dns <= set(spec["dnsNames"]) and ips <= set(spec["ipAddresses"]), "at least what the local CA gives"


@pytest.mark.parametrize("folder", OVERLAYS)
def test_every_identity_allowed_to_call_has_a_certificate(folder: str) -> None:
    callers = {identity for rpcs in ALLOWED_CALLERS.values() for allowed in rpcs.values() for identity in allowed}
    issued = {c["spec"]["uris"][0] for c in objects(folder, "Certificate").values() if not c["spec"].get("isCA")}
    assert {spiffe_id(caller) for caller in callers} <= issued
    assert issued == {spiffe_id(name) for name in (*PROCESSES, "cli")}
