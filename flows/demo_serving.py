"""The demo's serving process: `freshrec serve` following the `latest` alias, and a query."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from flows.deployments import PROJECT_ROOT
from infra.services.logpipe import wrapped
from stages.common.settings import CommonSettings


def start(common: CommonSettings, port: int, log_dir: Path) -> subprocess.Popen[bytes]:
    """Start serving `common.model_name@latest` on 127.0.0.1:`port` (logs in `log_dir`)."""
    freshrec = Path(sys.executable).with_name("freshrec")
    argv = [str(freshrec), "serve", "--model", common.model_name, "--alias", "latest",
            "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(  # output through the rotating log wrapper (infra/services/logpipe)
        wrapped(argv, log_dir / "serve.log"),
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _rows(n: int) -> bytes:
    from stages.ingest.core.synthetic import SyntheticConfig, generate_rows

    return b"\n".join(generate_rows(SyntheticConfig(seed=7), 0, n).rows)


def query(
    port: int, expected_version: int | None, timeout_s: float = 60.0
) -> tuple[int | None, list[float]]:
    """(version that answered, predictions) for a few synthetic rows.

    Waits up to `timeout_s` for serving to load a model and, when `expected_version` is given,
    to have swapped to it (serving follows the alias by polling).
    """
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    answer: tuple[int | None, list[float]] = (None, [])
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(
                f"{base}/predict", data=_rows(5), headers={"Content-Type": "text/plain"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                body = json.loads(response.read())
            with urllib.request.urlopen(f"{base}/version", timeout=10) as response:
                version = json.loads(response.read()).get("version")
            answer = (int(version) if version is not None else None), list(body["predictions"])
            if expected_version is None or answer[0] == expected_version:
                return answer
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(2)
    return answer


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop serving (SIGTERM, then SIGKILL after 10 s)."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
