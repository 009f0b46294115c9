"""Start-up failures give one-line errors that say what to do; nothing is left running."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from flows.cli import create_app
from infra.services import (
    LaunchPlan,
    ServiceSpec,
    UpOptions,
    free_port,
    start_service,
    status,
    up,
)
from infra.services.ports import Endpoint
from infra.services.process import PID_FILE
from stages.common.errors import InfraError, ServiceUnavailable
from stages.common.settings import CommonSettings


class _Script(ServiceSpec):
    """A stand-in service: a Python one-liner that never answers the probe."""

    name = "kafka"
    setting = "kafka_bootstrap"
    env_var = "FRESHREC_KAFKA_BOOTSTRAP"
    label = "test service"
    startup_timeout_s = 1.0

    def __init__(self, code: str) -> None:
        self.code = code

    def endpoint(self, settings: CommonSettings) -> Endpoint:
        raise NotImplementedError

    def url(self, host: str, port: int) -> str:
        return f"{host}:{port}"

    def launch(self, port: int, directory: Path) -> LaunchPlan:
        return LaunchPlan(argv=(sys.executable, "-c", self.code))

    def probe(self, url: str, settings: CommonSettings | None, timeout_s: float) -> str:
        raise ServiceUnavailable("no answer")


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port that another socket listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_start_service_on_a_busy_port(busy_port: int, tmp_path: Path) -> None:
    with pytest.raises(InfraError) as info:
        start_service("kafka", busy_port, tmp_path / "kafka")
    assert str(info.value) == (
        f"port {busy_port} on 127.0.0.1 is in use by another process: stop it, "
        "or set FRESHREC_KAFKA_BOOTSTRAP to use that Kafka broker"
    )


def test_up_refuses_a_busy_port_before_starting_anything(busy_port: int, tmp_path: Path) -> None:
    settings = CommonSettings(
        state_dir=tmp_path, redis_url=f"redis://127.0.0.1:{busy_port}/0"
    )
    with pytest.raises(InfraError, match=f"port {busy_port} .* set FRESHREC_REDIS_URL") as info:
        up(settings, UpOptions(embed=frozenset({"redis"})))
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "services").glob(f"*/{PID_FILE}"))


def test_up_rejects_an_unknown_service_name(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="unknown service 'zookeeper'"):
        up(CommonSettings(state_dir=tmp_path), UpOptions(embed=frozenset({"zookeeper"})))


def test_a_process_that_exits_points_at_its_log(tmp_path: Path) -> None:
    spec = _Script("import sys; print('bad flag --x'); sys.exit(3)")
    with pytest.raises(InfraError) as info:
        start_service(spec, free_port(), tmp_path, timeout_s=30)
    message = str(info.value)
    assert "exited during start-up with status 3" in message
    assert str(tmp_path / "server.log") in message and "bad flag --x" in message
    assert not (tmp_path / PID_FILE).exists()


def test_a_process_that_never_answers_is_stopped(tmp_path: Path) -> None:
    spec = _Script("import time; time.sleep(60)")
    with pytest.raises(InfraError, match=r"did not answer within 1 s \(no answer\): see") as info:
        start_service(spec, free_port(), tmp_path)
    pid = int(str(info.value).split("(pid ")[1].split(")")[0])
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not (tmp_path / PID_FILE).exists()


def _nothing_there(tmp_path: Path) -> CommonSettings:
    """Settings that name four free ports explicitly: four external services, all down."""
    kafka, redis, mlflow, prefect = (free_port() for _ in range(4))
    return CommonSettings(
        state_dir=tmp_path,
        kafka_bootstrap=f"127.0.0.1:{kafka}",
        redis_url=f"redis://:pw@127.0.0.1:{redis}/0",
        mlflow_tracking_uri=f"http://127.0.0.1:{mlflow}",
        prefect_api_url=f"http://127.0.0.1:{prefect}/api",
    )


def test_status_reports_unreachable_external_services(tmp_path: Path) -> None:
    statuses = status(_nothing_there(tmp_path))
    assert [s.name for s in statuses] == ["kafka", "redis", "mlflow", "prefect"]
    assert not any(s.healthy or s.embedded for s in statuses)
    assert "pw" not in statuses[1].url and "***" in statuses[1].url
    assert "unset FRESHREC_REDIS_URL" in statuses[1].detail


def test_cli_status_exits_non_zero_when_unhealthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _nothing_there(tmp_path)
    monkeypatch.setenv("FRESHREC_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("FRESHREC_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("FRESHREC_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("FRESHREC_MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    monkeypatch.setenv("PREFECT_API_URL", settings.prefect_api_url)
    result = CliRunner().invoke(create_app(), ["infra", "status"], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "external" in result.output and "kafka" in result.output


def test_up_never_starts_an_explicitly_configured_service(tmp_path: Path) -> None:
    with pytest.raises(InfraError) as info:
        up(_nothing_there(tmp_path))
    message = str(info.value)
    assert message.startswith("kafka: nothing accepts connections at 127.0.0.1:")
    assert "unset PREFECT_API_URL to use the embedded one" in message
    assert "\n" not in message
    assert not list((tmp_path / "services").glob(f"*/{PID_FILE}"))
