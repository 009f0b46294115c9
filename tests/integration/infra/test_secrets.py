"""Passwords never appear in output or on a command line, even when every service is down.

A distinct random password is planted in every place a user can put one (the Redis URL and
FRESHREC_REDIS_PASSWORD, user:password@ in the MLflow and Prefect URLs, the MLflow token, the
Kafka SASL password, the serving token), every address points at a closed loopback port, and
each stage's command runs into its connection error as a user would run it. While each runs,
`ps -eo args` is sampled; afterwards its stdout and stderr are searched.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.services import free_port
from stages.common.settings import CommonSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_PS_EVERY_S = 0.2


@dataclass(frozen=True)
class Ran:
    """What one command printed, and every `ps -eo args` snapshot taken while it ran."""

    output: str
    snapshots: list[str]
    returncode: int


def _planted(tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(environment for the commands, {where: password})."""
    passwords = {
        where: f"pw{where.replace('_', '')}{secrets.token_hex(8)}"
        for where in ("redis_url", "redis_password", "mlflow_url", "mlflow_token", "kafka_sasl",
                      "prefect_url", "serve_token")
    }
    closed = free_port()  # nothing listens there: every client gets "connection refused"
    env = {
        **os.environ,
        "TF_USE_LEGACY_KERAS": "1",
        "FRESHREC_STATE_DIR": str(tmp_path / "state"),
        "FRESHREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed}",
        "FRESHREC_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "FRESHREC_KAFKA_SASL_MECHANISM": "PLAIN",
        "FRESHREC_KAFKA_SASL_USERNAME": "bob",
        "FRESHREC_KAFKA_SASL_PASSWORD": passwords["kafka_sasl"],
        "FRESHREC_REDIS_URL": f"redis://:{passwords['redis_url']}@127.0.0.1:{closed}/0",
        "FRESHREC_REDIS_PASSWORD": passwords["redis_password"],
        "FRESHREC_MLFLOW_TRACKING_URI": f"http://alice:{passwords['mlflow_url']}@127.0.0.1:{closed}",
        "FRESHREC_MLFLOW_TOKEN": passwords["mlflow_token"],
        "PREFECT_API_URL": f"http://carol:{passwords['prefect_url']}@127.0.0.1:{closed}/api",
        "FRESHREC_PUBLISH_SERVE_TOKEN": passwords["serve_token"],
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    return env, passwords


def _ps() -> str:
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def _run(args: list[str], env: dict[str, str], cwd: Path, limit_s: float,
         interrupt_after_s: float | None = None) -> Ran:
    """Run `freshrec ARGS`, sampling `ps` until it exits (SIGINT after `interrupt_after_s`,
    SIGKILL after `limit_s`)."""
    log = cwd / "output.txt"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], env=env, cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT)
        began = time.monotonic()
        snapshots = []
        interrupted = False
        while proc.poll() is None:
            snapshots.append(_ps())
            elapsed = time.monotonic() - began
            if interrupt_after_s is not None and elapsed > interrupt_after_s and not interrupted:
                proc.send_signal(signal.SIGINT)
                interrupted = True
            if elapsed > limit_s:
                proc.kill()
            time.sleep(_PS_EVERY_S)
        proc.wait()
    return Ran(log.read_text(encoding="utf-8", errors="replace"), snapshots, proc.returncode)


def _criteo_rows(path: Path) -> Path:
    import numpy as np

    from stages.publish.synthetic import criteo_rows

    path.write_text("\n".join(criteo_rows(50, np.random.default_rng(3))) + "\n")
    return path


# (id, freshrec arguments, what its output says when it met the closed port, interrupt after)
_COMMANDS = [
    ("ingest", ["ingest", "--source", "{rows}", "--quiet"], "cannot reach Kafka", None),
    ("features", ["features", "--max-idle-s", "2"], "does not answer", None),
    ("train", ["train", "--replay", "{rows}"], "no MLflow tracking server answers", None),
    ("publish", ["publish", "--once"], "MLflow", None),
    ("serve", ["serve", "--port", "{port}"], "could not follow", 8.0),
    ("deploy", ["deploy", "ingest"], "ConnectError", None),
    ("infra-status", ["infra", "status"], "***", None),
]


@pytest.mark.parametrize(("stage", "args", "met_the_error", "interrupt_after_s"), _COMMANDS)
def test_no_password_in_output_or_command_lines(
    tmp_path: Path, stage: str, args: list[str], met_the_error: str,
    interrupt_after_s: float | None,
) -> None:
    env, passwords = _planted(tmp_path)
    rows = _criteo_rows(tmp_path / "rows.tsv")
    argv = [a.format(rows=rows, port=free_port()) for a in args]
    ran = _run(argv, env, tmp_path, limit_s=120, interrupt_after_s=interrupt_after_s)

    assert met_the_error in ran.output, ran.output[-3000:]
    assert ran.snapshots, "the command ended before ps could look"
    for where, password in passwords.items():
        lines = [line for line in ran.output.splitlines() if password in line]
        assert not lines, f"the {where} password is in the output of {stage}: {lines[:3]}"
        shown = [s for s in ran.snapshots if password in s]
        assert not shown, f"the {where} password is on a command line while {stage} runs"


def test_the_trainer_logs_no_secret_as_an_mlflow_param() -> None:
    """The trainer logs TrainSettings.model_dump() as run params: it must hold no secret."""
    from pydantic import SecretStr

    from stages.train.settings import TrainSettings

    for name, field in TrainSettings.model_fields.items():
        assert "Secret" not in repr(field.annotation), name
        assert not any(word in name for word in ("password", "token", "secret", "url", "uri")), name
    assert all(
        field.annotation not in (SecretStr, SecretStr | None)
        for field in TrainSettings.model_fields.values()
    )
    common = CommonSettings(redis_password="hunter2-x", mlflow_token="hunter3-y")  # type: ignore[arg-type]
    dumped = repr(common.model_dump()) + common.model_dump_json()
    assert "hunter2-x" not in dumped and "hunter3-y" not in dumped
