"""`up` / `status` / `down` with all four services on free ports in a temporary state dir."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from infra.services import SERVICE_NAMES, UpOptions, down, free_port, port_in_use, status, up
from infra.services.process import PID_FILE
from stages.common.settings import CommonSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_up_is_idempotent_and_down_leaves_nothing(tmp_path: Path) -> None:
    kafka, redis, mlflow, prefect = (free_port() for _ in range(4))
    settings = CommonSettings(
        state_dir=tmp_path / "state",
        kafka_bootstrap=f"127.0.0.1:{kafka}",
        redis_url=f"redis://127.0.0.1:{redis}/0",
        mlflow_tracking_uri=f"http://127.0.0.1:{mlflow}",
        prefect_api_url=f"http://127.0.0.1:{prefect}/api",
    )
    # The addresses are explicit (so they would be external): `embed` starts them anyway.
    options = UpOptions(embed=frozenset(SERVICE_NAMES))
    events: list[tuple[str, str]] = []
    try:
        started = up(settings, options, progress=lambda name, msg: events.append((name, msg)))
        assert [s.name for s in started] == list(SERVICE_NAMES)
        assert all(s.healthy and s.embedded and s.pid for s in started)
        assert {name for name, msg in events if msg.startswith("ready in")} == set(SERVICE_NAMES)

        now = status(settings)
        assert [(s.name, s.healthy, s.embedded, s.pid) for s in now] == [
            (s.name, True, True, s.pid) for s in started
        ]
        assert now[2].detail.startswith("MLflow ") and now[3].detail.startswith("Prefect ")
        family = {
            pid
            for s in started
            if s.pid
            for pid in [s.pid, *(c.pid for c in psutil.Process(s.pid).children(recursive=True))]
        }

        began = time.monotonic()
        again = up(settings, options)
        assert [s.pid for s in again] == [s.pid for s in started]
        assert all("already running" in s.detail for s in again)
        assert time.monotonic() - began < 20
    finally:
        stopped = down(settings)

    assert stopped == list(SERVICE_NAMES)
    assert all(_gone(pid) for pid in family), [p for p in family if not _gone(p)]
    assert not list((tmp_path / "state" / "services").glob(f"*/{PID_FILE}"))
    assert not any(port_in_use(p) for p in (kafka, redis, mlflow, prefect))
    assert not any(s.healthy for s in status(settings))
    assert down(settings) == []
