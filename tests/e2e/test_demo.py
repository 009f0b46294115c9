"""The README's main job, shortened: `freshrec demo` on real services, from a clean state, for
each bundled feature schema (`FRESHREC_SCHEMA`: its synthetic stream, its rows to query serving).

Checks what the demo itself checks and prints: events in = samples stored + dead letters, at
least three versions registered, and serving answered with the newest version.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.services.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]
FRESHREC = str(Path(sys.executable).with_name("freshrec"))


@pytest.mark.parametrize("preset", ["criteo", "ecommerce"])
def test_short_demo_end_to_end(preset: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FRESHREC_SCHEMA": preset,
        "FRESHREC_STATE_DIR": str(tmp_path / "state"),
        "FRESHREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "FRESHREC_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "FRESHREC_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",
        "FRESHREC_EMBED": "kafka,redis,mlflow,prefect",
        "COLUMNS": "120",
    }
    try:
        done = subprocess.run(
            [FRESHREC, "demo", "--duration", "75", "--rate", "1500",
             "--serve-port", str(free_port())],
            env=env, capture_output=True, text=True, timeout=1100, cwd=tmp_path,
        )
        output = done.stdout + done.stderr
        print(output[-6000:])
        assert f"feature schema: {preset}@" in output
        assert "adds up" in output and "all COMPLETED" in output and "demo: OK" in output
        assert done.returncode == 0, output[-3000:]
    finally:
        subprocess.run([FRESHREC, "infra", "down"], env=env, timeout=120, cwd=tmp_path)
