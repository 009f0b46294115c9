"""Ports and addresses: parsing settings values, port-in-use detection, redaction."""

from __future__ import annotations

import socket

import pytest

from infra.services import free_port, port_in_use, service_spec
from infra.services.ports import (
    Endpoint,
    bootstrap_endpoint,
    redact_url,
    require_loopback,
    url_endpoint,
)
from stages.common.errors import ConfigError, InfraError
from stages.common.settings import CommonSettings, load_settings


def test_bootstrap_endpoint_takes_the_first_host() -> None:
    assert bootstrap_endpoint("127.0.0.1:19092,other:9092") == Endpoint("127.0.0.1", 19092)
    assert bootstrap_endpoint("[::1]:9093") == Endpoint("::1", 9093)


def test_bootstrap_endpoint_rejects_a_missing_port() -> None:
    with pytest.raises(InfraError, match="FRESHREC_KAFKA_BOOTSTRAP"):
        bootstrap_endpoint("localhost")


def test_url_endpoint_uses_the_default_port() -> None:
    assert url_endpoint("http://localhost/api", 80, "X") == Endpoint("localhost", 80)
    assert url_endpoint("redis://127.0.0.1:6380/2", 6379, "X") == Endpoint("127.0.0.1", 6380)


@pytest.mark.parametrize(
    ("name", "field", "value", "expected"),
    [
        ("kafka", "kafka_bootstrap", "127.0.0.1:19092", Endpoint("127.0.0.1", 19092)),
        ("redis", "redis_url", "redis://localhost:16379/0", Endpoint("localhost", 16379)),
        ("mlflow", "mlflow_tracking_uri", "http://127.0.0.1:15000", Endpoint("127.0.0.1", 15000)),
        ("prefect", "prefect_api_url", "http://127.0.0.1:14200/api", Endpoint("127.0.0.1", 14200)),
    ],
)
def test_each_service_reads_its_port_from_its_setting(
    name: str, field: str, value: str, expected: Endpoint
) -> None:
    settings = CommonSettings(**{field: value})  # type: ignore[arg-type]
    assert service_spec(name).endpoint(settings) == expected
    assert settings.is_explicit(field)


def test_default_settings_give_the_default_ports() -> None:
    settings = CommonSettings()
    names = ("kafka", "redis", "mlflow", "prefect")
    ports = [service_spec(name).endpoint(settings).port for name in names]
    assert ports == [9092, 6379, 5000, 4200]


@pytest.mark.parametrize(
    ("name", "field", "value", "hint"),
    [
        ("redis", "redis_url", "rediss://127.0.0.1:6379/0", "FRESHREC_REDIS_URL=redis://"),
        ("mlflow", "mlflow_tracking_uri", "sqlite:///x.db", "FRESHREC_MLFLOW_TRACKING_URI=http"),
        ("prefect", "prefect_api_url", "http://127.0.0.1:4200/", "PREFECT_API_URL=http"),
    ],
)
def test_addresses_an_embedded_service_cannot_serve(
    name: str, field: str, value: str, hint: str
) -> None:
    settings = CommonSettings(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(InfraError, match=hint):
        service_spec(name).endpoint(settings)


def test_require_loopback() -> None:
    require_loopback(Endpoint("localhost", 1), "X")
    with pytest.raises(InfraError, match="FRESHREC_REDIS_URL names redis.example"):
        require_loopback(Endpoint("redis.example", 6379), "FRESHREC_REDIS_URL")


def test_redact_url_hides_the_password() -> None:
    assert redact_url("redis://user:s3cret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact_url("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_port_in_use_sees_a_listening_socket() -> None:
    port = free_port()
    assert not port_in_use(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert port_in_use(port)


def test_load_settings_names_the_variable_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_REDIS_URL", "localhost")
    with pytest.raises(ConfigError) as info:
        load_settings(CommonSettings)
    message = str(info.value)
    assert message.startswith("FRESHREC_REDIS_URL: ")
    assert "\n" not in message


def test_load_settings_reports_prefect_api_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "127.0.0.1:4200")
    with pytest.raises(ConfigError, match="^PREFECT_API_URL: "):
        load_settings(CommonSettings)
