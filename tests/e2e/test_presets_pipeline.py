"""Each bundled feature schema from ingest to a served prediction, stage by stage, with the
real CLIs on real services (embedded, isolated ports), and exact counts at every step:

ingest (the preset's synthetic stream, then a file with a bad row) -> features (every good
event stored, the bad one dead-lettered) -> train (one window of exactly the stored samples,
exported) -> publish (one version) -> `freshrec serve` (predictions for the preset's rows, and
for records keyed by its field names).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from infra.services.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]
FRESHREC = str(Path(sys.executable).with_name("freshrec"))
SYNTHETIC = 6000  # events of the preset's generator
BAD_ROW = b"this is not a row of any schema"


def _env(preset: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FRESHREC_SCHEMA": preset,
        "FRESHREC_STATE_DIR": str(tmp_path / "state"),
        "FRESHREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "FRESHREC_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "FRESHREC_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "FRESHREC_EMBED": "kafka,redis,mlflow",
        "FRESHREC_TRAIN_WINDOW_SAMPLES": str(SYNTHETIC + 2),  # one window: every sample
        "FRESHREC_TRAIN_WINDOW_SECONDS": "600",
        "FRESHREC_TRAIN_EXPORT_EVERY": "1",
        "FRESHREC_TRAIN_FULL_EXPORT_EVERY": "1",
        "FRESHREC_TRAIN_TABLE_CAPACITY": "100000",
        "FRESHREC_TRAIN_HIDDEN_UNITS": "32,16",
        "TF_USE_LEGACY_KERAS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    """Run `freshrec args`; its stdout + stderr (the assertion shows them when it fails)."""
    done = subprocess.run([FRESHREC, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"freshrec {' '.join(args)} failed:\n{output[-4000:]}"
    return output


def _last_json(output: str) -> dict[str, Any]:
    """The last line of `output` that is a JSON object (a stage CLI's summary)."""
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            parsed: dict[str, Any] = json.loads(line)
            return parsed
    raise AssertionError(f"no JSON summary in:\n{output[-3000:]}")


def _ingested(output: str) -> tuple[int, int, int]:
    """(read, sent, dead-lettered) from ingest's summary line."""
    found = re.search(r"read ([\d,]+), sent ([\d,]+), dead-lettered ([\d,]+)", output)
    assert found, output[-3000:]
    read, sent, dead = (int(g.replace(",", "")) for g in found.groups())
    return read, sent, dead


def _preset_rows(preset: str, n: int) -> list[bytes]:
    """`n` rows of the preset from its own generator (seed 9: not the ingested ones)."""
    if preset == "ecommerce":
        from stages.ingest.core.ecommerce import EcommerceConfig, EcommerceStream

        return EcommerceStream(EcommerceConfig(seed=9), "e2efile").batch(0, n)
    from stages.ingest.core.synthetic import SyntheticConfig, generate_rows

    return generate_rows(SyntheticConfig(seed=9), 0, n).rows


def _records(rows: list[bytes]) -> list[dict[str, Any]]:
    """Ecommerce events as records keyed by the schema's field names (serving's JSON form)."""
    out = []
    for row in rows:
        e = json.loads(row)
        out.append({"user": e["user"]["id"], "recent_items": e["user"]["recent_items"],
                    "item": e["item"]["id"], "category": e["item"]["category"],
                    "price": e["item"]["price"], "device": e["device"], "hour": e["hour"]})
    return out


def _post(url: str, body: bytes, content_type: str) -> dict[str, Any]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def _serving_version(base: str, deadline: float) -> int | None:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/version", timeout=5) as response:
                version = json.loads(response.read()).get("version")
            if version is not None:
                return int(version)
        except (OSError, ValueError):
            pass
        time.sleep(1)
    return None


@pytest.mark.parametrize("preset", ["criteo", "ecommerce"])
def test_a_preset_from_ingest_to_a_served_prediction(preset: str, tmp_path: Path) -> None:
    env = _env(preset, tmp_path)
    good = _preset_rows(preset, 2)
    source = tmp_path / "events.txt"
    source.write_bytes(b"\n".join([good[0], BAD_ROW, good[1]]) + b"\n")
    _run(["infra", "up"], env, tmp_path)
    server: subprocess.Popen[bytes] | None = None
    try:
        out = _run(["ingest", "--source", "synthetic", "--limit", str(SYNTHETIC), "--quiet"],
                   env, tmp_path)  # fmt: skip
        assert _ingested(out) == (SYNTHETIC, SYNTHETIC, 0)
        assert _ingested(_run(["ingest", "--source", str(source), "--quiet"], env, tmp_path)) \
            == (3, 2, 1)

        features = _last_json(_run(["features", "--max-idle-s", "10"], env, tmp_path))
        assert (features["events_in"], features["samples_out"], features["dead_letters"]) == \
            (SYNTHETIC + 2, SYNTHETIC + 2, 0)

        train = _last_json(_run(["train", "--max-windows", "1"], env, tmp_path, timeout=600))
        assert (train["windows"], train["samples"], train["export_seq"]) == (1, SYNTHETIC + 2, 1)

        publish = _last_json(_run(["publish", "--once"], env, tmp_path))
        assert publish["versions"] == [1] and publish["last_version"] == 1

        port = free_port()
        server = subprocess.Popen(
            [FRESHREC, "serve", "--alias", "latest", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        assert _serving_version(base, time.monotonic() + 180) == 1
        rows = _preset_rows(preset, 5)
        answer = _post(f"{base}/predict", b"\n".join(rows), "text/plain")
        assert len(answer["predictions"]) == 5
        assert all(0 < p < 1 for p in answer["predictions"])
        if preset == "ecommerce":
            records = _post(f"{base}/predict", json.dumps({"instances": _records(rows)}).encode(),
                            "application/json")  # fmt: skip
            assert records["predictions"] == pytest.approx(answer["predictions"], rel=1e-5)
    finally:
        if server is not None:
            server.terminate()
            server.wait(20)
        subprocess.run([FRESHREC, "infra", "down"], env=env, timeout=120, cwd=tmp_path)
