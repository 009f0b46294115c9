"""`freshrec infra up|status|down` as a user runs them: separate processes, detached services."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from infra.services import free_port
from infra.services.process import PID_FILE, read_pid_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _freshrec(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "infra", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_up_status_down(tmp_path: Path, mlflow_server: str, prefect_server: str) -> None:
    env = {
        **os.environ,
        "COLUMNS": "200",
        "FRESHREC_STATE_DIR": str(tmp_path / "state"),
        "FRESHREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "FRESHREC_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        # The session's servers: external for this state directory.
        "FRESHREC_MLFLOW_TRACKING_URI": mlflow_server,
        "PREFECT_API_URL": prefect_server,
    }
    up = _freshrec(["up", "--embed", "kafka", "--embed", "redis"], env, tmp_path)
    assert up.returncode == 0, up.stderr
    assert "kafka    ready in" in up.stderr and "mlflow   external at" in up.stderr
    record = read_pid_file(tmp_path / "state" / "services" / "redis" / PID_FILE)
    assert record is not None and psutil.pid_exists(record.pid)  # outlived the CLI process

    status = _freshrec(["status"], env, tmp_path)
    assert status.returncode == 0, status.stdout
    assert status.stdout.count("embedded") == 2 and status.stdout.count("external") == 2
    # which server, which version: valkey-server from the wheel, or a redis-server on PATH
    assert re.search(r"(valkey|redis) \d+\.\d+\.\d+", status.stdout), status.stdout
    redis_port = int(env["FRESHREC_REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", redis_port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.makefile("rb").readline().startswith(b"-NOAUTH")
    password = (tmp_path / "state" / "services" / "redis" / "password").read_text().strip()
    assert password not in status.stdout + status.stderr + up.stdout + up.stderr

    down = _freshrec(["down"], env, tmp_path)
    assert down.returncode == 0, down.stderr
    assert "redis    stopped pid" in down.stderr
    after = _freshrec(["status"], env, tmp_path)
    # Explicit addresses with nothing of freshrec's behind them: external, and down.
    assert after.returncode == 1
    assert after.stdout.count("external") == 4 and "nothing accepts connections" in after.stdout


def test_cli_reports_a_busy_port_in_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        env = {
            **os.environ,
            "FRESHREC_STATE_DIR": str(tmp_path / "state"),
            "FRESHREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
        }
        result = _freshrec(["up", "--embed", "kafka"], env, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"freshrec: error: port {port} on 127.0.0.1 is in use by another process: stop it, "
        "or set FRESHREC_KAFKA_BOOTSTRAP to use that Kafka broker"
    )
