"""The cluster manifests parse, name the services freshrec needs, and match its settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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


def test_redis_requires_a_password(compose: dict[str, Any]) -> None:
    assert "--requirepass" in compose["services"]["redis"]["command"]


def test_mlflow_uses_postgres_and_an_artifact_store(compose: dict[str, Any]) -> None:
    mlflow = _text(compose["services"]["mlflow"]["entrypoint"])
    assert "postgresql://" in mlflow and "--artifacts-destination s3://" in mlflow
    prefect = compose["services"]["prefect-server"]["environment"]
    assert prefect["PREFECT_SERVER_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")


def test_the_worker_points_freshrec_at_the_cluster(compose: dict[str, Any]) -> None:
    env = compose["services"]["prefect-worker"]["environment"]
    fields = CommonSettings.model_fields
    for var in env:
        if var.startswith("FRESHREC_"):
            assert var.removeprefix("FRESHREC_").lower() in fields, var
    assert env["PREFECT_API_URL"].endswith("/api")


def test_env_example_names_only_real_settings() -> None:
    pairs = _env_example()
    fields = CommonSettings.model_fields
    for var in pairs:
        assert var == "PREFECT_API_URL" or (
            var.startswith("FRESHREC_") and var.removeprefix("FRESHREC_").lower() in fields
        ), f"{var} is not a CommonSettings field"
    assert {"FRESHREC_KAFKA_BOOTSTRAP", "FRESHREC_REDIS_URL", "PREFECT_API_URL"} <= pairs.keys()


def test_env_example_values_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in _env_example():
        monkeypatch.delenv(var, raising=False)
    settings = CommonSettings(_env_file=CLUSTER / "freshrec.env.example")  # type: ignore[call-arg]
    assert settings.kafka_bootstrap == "localhost:9092"
    assert settings.is_explicit("redis_url") and settings.is_explicit("prefect_api_url")
