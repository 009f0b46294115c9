"""`up` / `status` / `down` with all four services on free ports in a temporary state dir.

Also security by default: every socket the services listen on is on 127.0.0.1, and the
embedded Redis refuses commands without its generated password.
"""

from __future__ import annotations

import re
import socket
import stat
import subprocess
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


def _listening(pids: set[int]) -> list[tuple[str, int]]:
    """(local address, pid) of every TCP socket in LISTEN state owned by one of `pids` (ss)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        local = line.split()[3]
        for pid in (int(p) for p in re.findall(r"pid=(\d+)", line)):
            if pid in pids:
                found.append((local, pid))
    return found


def _raw_redis(port: int, *commands: bytes) -> list[bytes]:
    """Send inline commands over a plain socket (no client library); one reply line each."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        reader = sock.makefile("rb")
        for command in commands:
            sock.sendall(command + b"\r\n")
            replies.append(reader.readline().rstrip())
    return replies


def _check_security(settings: CommonSettings, family: set[int], ports: dict[str, int]) -> None:
    listening = _listening(family)
    assert listening, "ss shows no listening socket of the services"
    assert all(local.startswith("127.0.0.1:") for local, _ in listening), listening
    bound = {int(local.rpartition(":")[2]) for local, _ in listening}
    assert set(ports.values()) <= bound, (ports, listening)

    directory = settings.state_dir / "services" / "redis"
    password = (directory / "password").read_text().strip()
    assert len(password) >= 32
    for name in ("password", "redis.conf"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    assert _raw_redis(ports["redis"], b"PING", b"SET k v") == [
        b"-NOAUTH Authentication required.", b"-NOAUTH Authentication required."]
    assert _raw_redis(ports["redis"], b"AUTH wrong-password")[0].startswith(b"-WRONGPASS")
    assert _raw_redis(ports["redis"], b"AUTH " + password.encode(), b"PING",
                      b"CONFIG GET maxmemory-policy") == [b"+OK", b"+PONG", b"*2"]

    # Clients find the password without being told (the state dir's file).
    import redis

    client_settings = CommonSettings(
        state_dir=settings.state_dir, redis_url=settings.redis_url, embed=frozenset({"redis"})
    )
    assert client_settings.redis_password is not None
    client = redis.Redis.from_url(
        client_settings.redis_url, password=client_settings.redis_password.get_secret_value()
    )
    try:
        assert client.ping() and client.config_get("maxmemory-policy") == {
            "maxmemory-policy": "noeviction"}
        assert int(client.config_get("maxmemory")["maxmemory"]) == 1 << 30
    finally:
        client.close()

    # No command line on this machine carries the password.
    args = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert password not in args.stdout


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
        assert re.match(r"(valkey|redis) \d+\.\d+", now[1].detail), now[1].detail
        family = {
            pid
            for s in started
            if s.pid
            for pid in [s.pid, *(c.pid for c in psutil.Process(s.pid).children(recursive=True))]
        }
        _check_security(
            settings, family,
            {"kafka": kafka, "redis": redis, "mlflow": mlflow, "prefect": prefect},
        )

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
