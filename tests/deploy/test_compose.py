"""docker-compose.yml, checked statically (Docker cannot run here): the Compose specification's
schema, health-ordered start, addresses that meet listeners, and commands that exist."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway_common.config import load_config

ROOT = Path(__file__).parents[2]
COMPOSE_SCHEMA = ROOT.parent / "shared/fixtures/specs/compose/compose-spec.json"
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]

GRPC_SERVICES = ("router", "auth", "ratelimit", "providers", "metering")
GRPC_PORTS = {"router": 50051, "auth": 50052, "ratelimit": 50053, "providers": 50054, "metering": 50055}
STATELESS = ("router", "providers", "ratelimit")
GATEWAY_PROCESSES = (*GRPC_SERVICES, "edge")
ONE_SHOT = ("certs",)
"""Services that run to completion; the others wait for them with service_completed_successfully."""

# ${NAME}, ${NAME:-default} and ${NAME-default}, as Compose interpolates them.
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def _environment(service: str) -> dict[str, str | None]:
    """A service's environment as a mapping, whichever of the two Compose forms it is written in."""
    environment = SERVICES[service].get("environment") or {}
    if isinstance(environment, dict):
        return {name: None if value is None else str(value) for name, value in environment.items()}
    pairs = (item.split("=", 1) for item in environment)
    return {pair[0]: pair[1] if len(pair) == 2 else None for pair in pairs}


def _interpolated(service: str, host: dict[str, str]) -> dict[str, str]:
    """The environment the service's process gets when Compose runs on a host with ``host`` set."""
    resolved: dict[str, str] = {}
    for name, value in _environment(service).items():
        if value is None:
            if name in host:
                resolved[name] = host[name]
            continue
        resolved[name] = _INTERPOLATION.sub(lambda m: host.get(m["name"]) or m["default"] or "", value)
    return resolved


def _port(host_port: str) -> tuple[str, int]:
    host, _, port = host_port.rpartition(":")
    return host, int(port)


def _python_modules(argv: list[str]) -> list[str]:
    """Modules a ``python -m MODULE …`` command line runs."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-m" and argv[0].startswith("python")]


def _runnable(module: str) -> bool:
    """Whether ``python -m module`` finds code in this repository (a package needs its __main__)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return False
    if spec.submodule_search_locations is not None:
        return _runnable(f"{module}.__main__")
    return Path(spec.origin).resolve().is_relative_to(ROOT)


def test_follows_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    # The schema's $schema URI ("https://…/draft-07/schema") is not one jsonschema recognises by
    # name, so the draft is named here rather than guessed.
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert errors == []


def test_runs_the_mesh_and_its_stores() -> None:
    assert set(SERVICES) == {*GRPC_SERVICES, "edge", "redis", "postgres", *ONE_SHOT}
    assert SERVICES["redis"]["image"] == "redis:7-alpine"
    assert SERVICES["postgres"]["image"] == "postgres:15-alpine"
    volume = SERVICES["postgres"]["volumes"][0].split(":")
    assert volume[1] == "/var/lib/postgresql/data"
    assert volume[0] in COMPOSE["volumes"], "postgres keeps its data in a named volume"


def test_redis_keeps_the_counters_across_a_restart() -> None:
    command = SERVICES["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=False))
    assert options.get("--appendonly") == "yes", "budgets of days and months must survive a restart"
    assert options.get("--appendfsync") in ("everysec", "always")
    volume = SERVICES["redis"]["volumes"][0].split(":")
    assert volume[1] == options.get("--dir", "/data")
    assert volume[0] in COMPOSE["volumes"], "redis keeps its append-only file in a named volume"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_has_a_healthcheck(service: str) -> None:
    healthcheck = SERVICES[service].get("healthcheck") or {}
    assert not healthcheck.get("disable")
    assert healthcheck.get("test", ["NONE"])[0] in ("CMD", "CMD-SHELL")


@pytest.mark.parametrize("service", GRPC_SERVICES)
def test_grpc_healthchecks_probe_the_port_the_service_listens_on(service: str) -> None:
    test = SERVICES[service]["healthcheck"]["test"]
    _, port = _port(_environment(service)[f"GATEWAY_{service.upper()}_LISTEN"] or "")

    # Over TLS, showing the service's own certificate (health is open to every verified peer).
    assert test[1:] == ["python", "-m", "gateway_common.healthcheck", str(port), "127.0.0.1", service]


def test_the_edge_healthcheck_gets_health_on_the_edge_port() -> None:
    test = " ".join(SERVICES["edge"]["healthcheck"]["test"])
    port = _environment("edge")["GATEWAY_EDGE_PORT"]

    assert "urllib.request" in test
    assert re.search(rf"http://(127\.0\.0\.1|localhost):{port}/health\b", test)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_dependencies_are_awaited_until_healthy(service: str) -> None:
    depends_on = SERVICES[service].get("depends_on") or {}
    assert isinstance(depends_on, dict), "the short list form cannot wait for health"
    for name, condition in depends_on.items():
        assert name in SERVICES
        expected = "service_completed_successfully" if name in ONE_SHOT else "service_healthy"
        assert condition.get("condition") == expected, f"{service} -> {name}"


def test_each_service_waits_for_what_it_needs() -> None:
    needs = {
        "router": {"auth", "ratelimit", "providers", "metering"},
        "edge": {"router"},
        "auth": {"postgres"},
        "metering": {"postgres"},
        "ratelimit": {"redis", "metering"},
    }
    for service, dependencies in needs.items():
        assert dependencies <= set(SERVICES[service].get("depends_on") or {}), service


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_addresses_reach_a_service_listening_on_that_port(service: str) -> None:
    for variable, value in _environment(service).items():
        match = re.fullmatch(r"GATEWAY_([A-Z]+)_ADDR", variable)
        if match is None:
            continue
        host, port = _port(value or "")
        assert host in SERVICES, f"{service}: {variable}={value} names no service"
        listen = _environment(host).get(f"GATEWAY_{match[1]}_LISTEN")
        assert listen is not None, f"{service}: {variable}={value}, but {host} sets no GATEWAY_{match[1]}_LISTEN"
        assert _port(listen) == ("0.0.0.0", port), f"{service}: {variable}={value}, {host} listens on {listen}"


@pytest.mark.parametrize("service", GRPC_SERVICES)
def test_grpc_services_listen_on_every_interface_at_their_port(service: str) -> None:
    port = GRPC_PORTS[service]

    assert _environment(service)[f"GATEWAY_{service.upper()}_LISTEN"] == f"0.0.0.0:{port}"
    assert _environment("router")[f"GATEWAY_{service.upper()}_ADDR"] == f"{service}:{port}"


@pytest.mark.parametrize("service", [*GRPC_SERVICES, "edge"])
def test_every_process_loads_the_configuration_it_is_given(service: str) -> None:
    config = load_config(env=_interpolated(service, host={}))

    if service == "edge":
        assert (config.edge.host, config.edge.port) == ("0.0.0.0", 8080)
    else:
        assert getattr(config.services, service).listen == f"0.0.0.0:{GRPC_PORTS[service]}"
    for other, port in GRPC_PORTS.items():
        assert getattr(config.services, other).address == f"{other}:{port}"
    if service in ("auth", "metering"):
        assert getattr(config, service).database_url == "postgresql://gateway:gateway@postgres:5432/gateway"
    if service == "ratelimit":
        assert config.ratelimit.redis_url == "redis://redis:6379/0"


def test_the_host_environment_reaches_the_processes() -> None:
    host = {"POSTGRES_PASSWORD": "s3cret", "OPENAI_API_KEY": "sk-test", "GATEWAY_LOG_LEVEL": "DEBUG"}

    assert load_config(env=_interpolated("metering", host)).metering.database_url == (
        "postgresql://gateway:s3cret@postgres:5432/gateway"
    )
    assert _interpolated("providers", host)["OPENAI_API_KEY"] == "sk-test"
    assert "OPENAI_API_KEY" not in _interpolated("providers", host={})
    assert load_config(env=_interpolated("router", host)).log_level == "DEBUG"


def test_the_edge_is_published_once_on_its_port() -> None:
    environment = _environment("edge")
    assert (environment["GATEWAY_EDGE_HOST"], environment["GATEWAY_EDGE_PORT"]) == ("0.0.0.0", "8080")
    assert [port.rsplit(":", 1)[1] for port in SERVICES["edge"]["ports"]] == ["8080"]
    assert SERVICES["edge"].get("deploy", {}).get("replicas", 1) == 1


@pytest.mark.parametrize("service", STATELESS)
def test_stateless_services_run_replicated(service: str) -> None:
    assert "ports" not in SERVICES[service], "a replicated service cannot publish a fixed host port"
    assert SERVICES[service]["deploy"]["replicas"] >= 2


def test_stores_are_reached_by_service_name() -> None:
    postgres = SERVICES["postgres"]["environment"]
    database_url = f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}@postgres:5432/{postgres['POSTGRES_DB']}"

    assert _environment("ratelimit")["REDIS_URL"] == "redis://redis:6379/0"
    assert _environment("auth")["DATABASE_URL"] == database_url
    assert _environment("metering")["DATABASE_URL"] == database_url


def test_secrets_pass_through_from_the_host_and_are_never_written_here() -> None:
    secrets = {
        "providers": ["OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"],
        "auth": ["GATEWAY_TENANT_KEYS", "GATEWAY_ADMIN_KEY"],
    }
    for service, names in secrets.items():
        environment = _environment(service)
        for name in names:
            assert name in environment, f"{service} gets {name}"
            assert environment[name] in (None, f"${{{name}}}", f"${{{name}:-}}"), f"{service}: {name} is written here"


@pytest.mark.parametrize("service", sorted(set(SERVICES) - {"redis", "postgres"}))
def test_gateway_services_build_from_the_repository_image(service: str) -> None:
    assert SERVICES[service]["build"] in (".", {"context": "."})
    expected = {"edge": "edge", "certs": "gateway_common.tls"}.get(service, f"services.{service}")
    assert _python_modules(SERVICES[service]["command"]) == [expected]


@pytest.mark.parametrize("service", sorted(set(SERVICES) - {"redis", "postgres"}))
def test_commands_run_modules_of_this_repository(service: str) -> None:
    for module in _python_modules(SERVICES[service]["command"]):
        assert _runnable(module), f"{service}: python -m {module} finds nothing in the repository"


@pytest.mark.parametrize("service", GRPC_SERVICES)
def test_healthchecks_run_modules_of_this_repository(service: str) -> None:
    for module in _python_modules(SERVICES[service]["healthcheck"]["test"][1:]):
        assert _runnable(module), f"{service}: python -m {module} finds nothing in the repository"


def test_the_image_is_slim_python_run_as_a_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    instructions = [line.split(None, 1) for line in dockerfile.splitlines() if line and not line[0].isspace()]
    instructions = [parts for parts in instructions if parts[0].isupper()]

    assert ["FROM", "python:3.11-slim"] in instructions
    users = [parts[1].strip() for parts in instructions if parts[0] == "USER"]
    assert users and users[-1] not in ("root", "0"), "the services run as a non-root user"
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".venv", ".gateway", ".env"} <= set(ignored)


# -- service identity: certificates minted once, each process mounting only its own ------------


def _certs_command() -> list[str]:
    command: list[str] = SERVICES["certs"]["command"]
    assert _python_modules(command) == ["gateway_common.tls"]
    return command[command.index("gateway_common.tls") + 1 :]


def test_a_one_shot_service_mints_a_certificate_per_process_and_for_the_cli() -> None:
    certs = SERVICES["certs"]
    assert certs.get("restart") == "no"
    arguments = _certs_command()
    assert arguments[0] == "/certs" and "--per-service" in arguments
    assert "--if-missing" in arguments, "a restart must not replace the CA the running services trust"
    names = {a for a in arguments[1:] if not a.startswith("--")}
    assert names == {*GATEWAY_PROCESSES, "cli"}
    assert certs["volumes"] == ["certs:/certs"] and "certs" in COMPOSE["volumes"]


def test_the_certs_command_writes_what_each_process_mounts(tmp_path: Path) -> None:
    from gateway_common.tls import main as mint

    arguments = [str(tmp_path) if a == "/certs" else a for a in _certs_command()]
    assert mint(arguments) == 0
    for name in (*GATEWAY_PROCESSES, "cli"):
        assert {p.name for p in (tmp_path / name).iterdir()} == {"ca.crt", f"{name}.crt", f"{name}.key"}
    ca = (tmp_path / "ca.crt").read_bytes()
    assert mint(arguments) == 0  # --if-missing: a second run keeps the CA
    assert (tmp_path / "ca.crt").read_bytes() == ca


@pytest.mark.parametrize("service", GATEWAY_PROCESSES)
def test_every_process_mounts_only_its_own_certificate_read_only(service: str) -> None:
    mounts = [m for m in SERVICES[service].get("volumes", []) if isinstance(m, dict) and m.get("source") == "certs"]
    assert mounts == [
        {"type": "volume", "source": "certs", "target": "/certs", "read_only": True, "volume": {"subpath": service}}
    ]
    assert SERVICES[service]["depends_on"]["certs"] == {"condition": "service_completed_successfully"}
    tls = load_config(env=_interpolated(service, host={})).tls
    assert (tls.internal, tls.dir) == ("on", "/certs")


def test_router_spools_outlive_their_containers() -> None:
    """Each router replica spools usage on a volume that outlives the container, one file per host
    name, so a replica that is re-created (another host name) leaves its file for the others to adopt."""
    router = SERVICES["router"]
    spool = _environment("router")["GATEWAY_METERING_SPOOL_PATH"]
    assert spool is not None and "{hostname}" in spool
    mounts = [v for v in router["volumes"] if isinstance(v, str) and v.startswith("router-spool:")]
    assert mounts == [f"router-spool:{Path(spool).parent}"]
    assert "router-spool" in COMPOSE["volumes"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert str(Path(spool).parent) in dockerfile, "the image creates the mount point owned by the service user"
