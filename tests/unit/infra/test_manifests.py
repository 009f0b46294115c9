"""The cluster manifests parse, name the services freshrec needs, and match its settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from stages.common.settings import CommonSettings

CLUSTER = Path(__file__).resolve().parents[3] / "infra" / "cluster"
_ENV_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((CLUSTER / "docker-compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _env_example() -> dict[str, str]:
    pairs: dict[str, str] = {}
    for line in (CLUSTER / "freshrec.env.example").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.match(line.strip())
        assert match, f"not VAR=value: {line!r}"
        pairs[match.group(1)] = match.group(2)
    return pairs


def _text(value: Any) -> str:
    return " ".join(value) if isinstance(value, list) else str(value)


def test_compose_has_every_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    names = ("kafka", "redis", "postgres", "minio", "mlflow", "prefect-server", "prefect-worker")
    for name in names:
        assert name in services, name
        assert services[name].get("image"), name
    assert not any("zookeeper" in name for name in services)


def test_kafka_runs_in_kraft_mode(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]


def test_every_published_port_binds_to_loopback_unless_told(compose: dict[str, Any]) -> None:
    published = {
        name: service["ports"] for name, service in compose["services"].items()
        if service.get("ports")
    }
    assert set(published) == {"kafka", "redis", "minio", "mlflow", "prefect-server"}
    for name, ports in published.items():
        for port in ports:
            host, _, mapping = str(port).partition("}:")
            assert host == "${FRESHREC_BIND:-127.0.0.1", (name, port)
            outside, inside = mapping.split(":")
            assert outside == inside and outside.isdigit(), (name, port)
    assert "postgres" not in published  # reached by service name only


def _no_secret_on_a_command_line(service: dict[str, Any]) -> None:
    for key in ("command", "entrypoint"):
        text = _text(service.get(key, ""))
        # a password may appear as $$VAR (expanded inside the container's shell), never as
        # ${VAR} (compose would paste it into the argv that `ps` shows)
        assert not re.search(r"\$\{[A-Z_]*PASSWORD", text), text
        assert "--requirepass" not in text and "PASSWORD@" not in text


def test_redis_requires_a_password_from_a_config_file(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    script = _text(redis["entrypoint"])
    assert "requirepass" in script and "$$REDIS_PASSWORD" in script
    assert "maxmemory-policy noeviction" in script
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert redis["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")
    major, minor, patch = (int(x) for x in redis["image"].split(":")[1].split("."))
    assert (major, minor, patch) >= (7, 4, 6)  # CVE-2025-49844 fixed
    for service in compose["services"].values():
        _no_secret_on_a_command_line(service)


def test_kafka_clients_authenticate_with_sasl_plain(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert protocols["INTERNAL"] == protocols["EXTERNAL"] == "SASL_PLAINTEXT"
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "PLAIN"
    for listener in ("INTERNAL", "EXTERNAL"):
        jaas = env[f"KAFKA_LISTENER_NAME_{listener}_PLAIN_SASL_JAAS_CONFIG"]
        assert "PlainLoginModule required" in jaas and 'user_freshrec="${KAFKA_PASSWORD:?' in jaas
    assert "--command-config" in _text(compose["services"]["kafka"]["healthcheck"]["test"])
    worker = compose["services"]["prefect-worker"]["environment"]
    assert worker["FRESHREC_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert worker["FRESHREC_KAFKA_SASL_PASSWORD"].startswith("${KAFKA_PASSWORD:?")


def test_mlflow_and_prefect_require_a_login(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]
    assert "--app-name basic-auth" in _text(mlflow["entrypoint"])
    env = mlflow["environment"]
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_PASSWORD:?")
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"].startswith("${MLFLOW_SECRET_KEY:?")
    ini = env["MLFLOW_AUTH_CONFIG_PATH"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in mlflow["volumes"]}
    auth_ini = (CLUSTER / mounted[ini]).read_text(encoding="utf-8")
    assert "authenticate_request_basic_auth" in auth_ini and "admin_password" not in auth_ini
    server = compose["services"]["prefect-server"]["environment"]
    auth = server["PREFECT_SERVER_API_AUTH_STRING"]
    assert auth == "freshrec:${PREFECT_PASSWORD:?set PREFECT_PASSWORD}"
    worker = compose["services"]["prefect-worker"]["environment"]
    assert worker["PREFECT_API_AUTH_STRING"] == server["PREFECT_SERVER_API_AUTH_STRING"]
    assert worker["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_PASSWORD:?")


def test_the_prefect_auth_settings_exist_in_this_prefect() -> None:
    settings = pytest.importorskip("prefect.settings")
    assert settings.PREFECT_SERVER_API_AUTH_STRING.name == "PREFECT_SERVER_API_AUTH_STRING"
    assert settings.PREFECT_API_AUTH_STRING.name == "PREFECT_API_AUTH_STRING"


def test_mlflow_uses_postgres_and_an_artifact_store(compose: dict[str, Any]) -> None:
    mlflow = _text(compose["services"]["mlflow"]["entrypoint"])
    backend = compose["services"]["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert backend.startswith("postgresql://") and "--artifacts-destination s3://" in mlflow
    prefect = compose["services"]["prefect-server"]["environment"]
    assert prefect["PREFECT_SERVER_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")


def test_the_worker_points_freshrec_at_the_cluster(compose: dict[str, Any]) -> None:
    env = compose["services"]["prefect-worker"]["environment"]
    fields = CommonSettings.model_fields
    for var in env:
        if var.startswith("FRESHREC_"):
            assert var.removeprefix("FRESHREC_").lower() in fields, var
    assert env["PREFECT_API_URL"].endswith("/api")


# Variables the tools read themselves (Prefect reads .env too).
_TOOL_VARIABLES = frozenset({"PREFECT_API_URL", "PREFECT_API_AUTH_STRING"})


def test_env_example_names_only_real_settings() -> None:
    pairs = _env_example()
    fields = CommonSettings.model_fields
    for var in pairs:
        assert var in _TOOL_VARIABLES or (
            var.startswith("FRESHREC_") and var.removeprefix("FRESHREC_").lower() in fields
        ), f"{var} is not a CommonSettings field"
    assert {"FRESHREC_KAFKA_BOOTSTRAP", "FRESHREC_REDIS_URL", "PREFECT_API_URL"} <= pairs.keys()


def test_env_example_values_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in _env_example():
        monkeypatch.delenv(var, raising=False)
    settings = CommonSettings(_env_file=CLUSTER / "freshrec.env.example")  # type: ignore[call-arg]
    assert settings.kafka_bootstrap == "localhost:9092"
    assert settings.is_explicit("redis_url") and settings.is_explicit("prefect_api_url")
    # every service of the compose file asks for a password, and the example gives one
    assert settings.kafka_security_protocol == "SASL_PLAINTEXT"
    assert settings.kafka_sasl_mechanism == "PLAIN" and settings.kafka_sasl_password is not None
    assert settings.redis_password is not None
    assert urlsplit(settings.mlflow_tracking_uri).password == "change-me"
    assert _env_example()["PREFECT_API_AUTH_STRING"] == "freshrec:change-me"
