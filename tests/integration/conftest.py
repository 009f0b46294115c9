"""Real services for the integration tests, started as local processes on free loopback ports.

`kafka_broker`, `redis_server`, `mlflow_server` and `prefect_server` are session fixtures that
give the client address (a bootstrap "127.0.0.1:PORT" for Kafka, URLs for the others; the Redis
URL carries the server's generated password). A service
starts only when a selected test needs it; the services the selected tests name start in
parallel right after collection (MLflow and Prefect take tens of seconds each), and all stop
at the end of the session.

Tests share these servers, so each one isolates itself: `make_settings` / `services_env` give
settings with the test's own topics, Redis namespace, MLflow experiment and model name, and
`unique_name` makes more names (consumer groups, keys).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from infra.services import SERVICE_NAMES, RunningService, free_port, start_service
from stages.common.settings import CommonSettings, load_settings

# fixture name -> service name, and service name -> the CommonSettings field it fills
SERVICE_FIXTURES = {
    "kafka_broker": "kafka",
    "redis_server": "redis",
    "mlflow_server": "mlflow",
    "prefect_server": "prefect",
}
SERVICE_SETTINGS = {
    "kafka": "kafka_bootstrap",
    "redis": "redis_url",
    "mlflow": "mlflow_tracking_uri",
    "prefect": "prefect_api_url",
}
# Fixtures that fetch services with getfixturevalue, so that collection cannot see it.
_NEEDS_ALL = frozenset({"services_env"})


class ServicePool:
    """Starts each service at most once per session, in the background; stops them all."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="freshrec-services-"))
        self._pool = ThreadPoolExecutor(max_workers=len(SERVICE_NAMES), thread_name_prefix="svc")
        self._started: dict[str, Future[RunningService]] = {}
        self._lock = threading.Lock()

    def _future(self, name: str) -> Future[RunningService]:
        with self._lock:
            if name not in self._started:
                self._started[name] = self._pool.submit(
                    start_service, name, free_port(), self.root / name
                )
            return self._started[name]

    def prestart(self, names: set[str]) -> None:
        """Begin starting `names` without waiting."""
        for name in sorted(names):
            self._future(name)

    def url(self, name: str) -> str:
        """The client address of `name` (with its credentials), starting it when needed."""
        return self._future(name).result().url

    def close(self) -> None:
        """Stop every service started; keep the directory (logs) when something failed."""
        failed = False
        for future in self._started.values():
            try:
                future.result().stop()
            except Exception:  # a start that failed was stopped already; its log stays
                failed = True
        self._pool.shutdown(wait=True)
        if not failed:
            shutil.rmtree(self.root, ignore_errors=True)


_POOL_KEY = pytest.StashKey[ServicePool]()


def _pool(config: pytest.Config) -> ServicePool:
    if _POOL_KEY not in config.stash:
        config.stash[_POOL_KEY] = ServicePool()
    return config.stash[_POOL_KEY]


@pytest.hookimpl(trylast=True)  # after -k / -m deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.option.collectonly:
        return
    needed: set[str] = set()
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        needed.update(SERVICE_FIXTURES[f] for f in names & SERVICE_FIXTURES.keys())
        if names & _NEEDS_ALL:
            needed.update(SERVICE_NAMES)
    if needed:
        _pool(config).prestart(needed)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _POOL_KEY in config.stash:
        config.stash[_POOL_KEY].close()


@pytest.fixture(scope="session")
def kafka_broker(pytestconfig: pytest.Config) -> str:
    """Bootstrap address "127.0.0.1:PORT" of a Kafka-protocol broker (Tansu, in memory)."""
    return _pool(pytestconfig).url("kafka")


@pytest.fixture(scope="session")
def redis_server(pytestconfig: pytest.Config) -> str:
    """URL "redis://:PASSWORD@127.0.0.1:PORT/0" of the embedded Redis (no persistence).

    The server requires its generated password; the URL carries it, so
    `redis.Redis.from_url(redis_server)` and settings made from it just work. Print it
    only through `redact_url`."""
    return _pool(pytestconfig).url("redis")


@pytest.fixture(scope="session")
def mlflow_server(pytestconfig: pytest.Config) -> str:
    """Tracking URI "http://127.0.0.1:PORT" of an MLflow server with registry and artifacts."""
    return _pool(pytestconfig).url("mlflow")


@pytest.fixture(scope="session")
def prefect_server(pytestconfig: pytest.Config) -> str:
    """API URL "http://127.0.0.1:PORT/api" of a Prefect server (SQLite)."""
    return _pool(pytestconfig).url("prefect")


@pytest.fixture
def unique_name() -> Callable[..., str]:
    """unique_name(prefix="t") -> "t-1a2b3c4d5e6f": a fresh name for topics, groups, keys."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make


@pytest.fixture
def make_settings(
    request: pytest.FixtureRequest, unique_name: Callable[..., str], tmp_path: Path
) -> Callable[..., CommonSettings]:
    """make_settings(*services, **overrides) -> CommonSettings for this test.

    `services` (names from SERVICE_NAMES) are started if needed and filled in; every call gets
    its own topics, Redis namespace, MLflow experiment and model name, and a state directory
    in the test's tmp_path. `overrides` are CommonSettings fields.
    """

    def make(*services: str, **overrides: Any) -> CommonSettings:
        tag = unique_name("t")
        values: dict[str, Any] = {
            "state_dir": tmp_path / "state",
            "topic_events": f"{tag}.events",
            "topic_events_dlq": f"{tag}.events.dlq",
            "redis_namespace": tag,
            "mlflow_experiment": tag,
            "model_name": f"{tag}-ctr",
        }
        fixtures = {service: fixture for fixture, service in SERVICE_FIXTURES.items()}
        for service in services:
            if service not in fixtures:
                raise ValueError(f"unknown service {service!r}: use {', '.join(SERVICE_NAMES)}")
            values[SERVICE_SETTINGS[service]] = request.getfixturevalue(fixtures[service])
        values.update(overrides)
        return load_settings(CommonSettings, **values)

    return make


@pytest.fixture
def services_env(make_settings: Callable[..., CommonSettings]) -> Iterator[CommonSettings]:
    """CommonSettings pointing at all four session services, with this test's own names."""
    yield make_settings(*SERVICE_NAMES)
