"""Prefect's own CLI, run as a user runs it from the checkout, against a real Prefect server.

`prefect work-pool create`, `prefect --no-prompt deploy --all` with the repository's prefect.yaml,
`prefect deployment ls`, `prefect flow-run ls`, and a process worker that picks up a run of the
ingest deployment and runs it against the real broker. Every command must exit 0: with fastapi
0.151 to 0.154 Prefect 3.8.8's server answered its own CLI's list commands with 422.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flows.deployments import DEFAULT_POOL, SPECS, deployment_name
from infra.services import free_port, start_service

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
PREFECT = Path(sys.executable).with_name("prefect")
INGEST_LIMIT = 20

Prefect = Callable[..., str]


@pytest.fixture(scope="module")
def own_prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """API URL of a Prefect server for this module alone.

    prefect.yaml fixes the pool and deployment names, which the session server shares with the
    other tests. Its scheduler is off, so that the publish deployment's schedule makes no runs
    for the worker here to pick up (publish needs MLflow).
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED", "false")
        server = start_service("prefect", free_port(), tmp_path_factory.mktemp("prefect"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def prefect(
    own_prefect_server: str,
    kafka_broker: str,
    unique_name: Callable[..., str],
    tmp_path: Path,
) -> Prefect:
    """prefect(*args, timeout_s=120, both=False): run `<venv>/bin/prefect *args` in the checkout.

    Returns stdout, or with `both` stdout and stderr (where Prefect's loggers write); fails the
    test on a non-zero exit or a 422. Flow runs that a worker starts get this test's own topics
    and state directory, and an MLflow address where nothing listens.
    """
    tag = unique_name("cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FRESHREC_"))}
    env.update(
        PREFECT_API_URL=own_prefect_server,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        COLUMNS="200",  # wide enough that Rich tables do not cut names
        FRESHREC_KAFKA_BOOTSTRAP=kafka_broker,
        FRESHREC_TOPIC_EVENTS=f"{tag}.events",
        FRESHREC_TOPIC_EVENTS_DLQ=f"{tag}.events.dlq",
        FRESHREC_STATE_DIR=str(tmp_path / "state"),
        FRESHREC_MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}",
    )

    def run(*args: str, timeout_s: float = 120, both: bool = False) -> str:
        done = subprocess.run(
            [str(PREFECT), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        output = f"{done.stdout}\n{done.stderr}"
        command = " ".join(["prefect", *args])
        assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{output[-4000:]}"
        assert "Unprocessable Entity" not in output, f"`{command}` got a 422:\n{output[-4000:]}"
        return output if both else done.stdout

    return run


def test_the_prefect_cli_deploys_lists_and_runs_the_stages(prefect: Prefect) -> None:
    prefect("work-pool", "create", DEFAULT_POOL, "--type", "process")
    assert DEFAULT_POOL in prefect("work-pool", "ls")

    prefect("--no-prompt", "deploy", "--all", timeout_s=180)
    listed = prefect("deployment", "ls")
    expected = {deployment_name(stage) for stage in SPECS}
    assert {name for name in expected if name in listed} == expected, listed
    deployments = {d["name"]: d for d in json.loads(prefect("deployment", "ls", "-o", "json"))}
    assert set(deployments) == set(SPECS)
    for stage, deployment in deployments.items():
        assert deployment["work_pool_name"] == DEFAULT_POOL
        assert deployment["entrypoint"].startswith("flows/stages.py:")
        assert deployment["parameters"] == SPECS[stage].parameters
        # prefect.yaml's twin is flows.deployments.SPECS (`freshrec deploy`): the same values.
        assert deployment["description"] == SPECS[stage].description
        assert deployment["tags"] == ["freshrec", stage]
        # `{{ $PWD }}` in the pull step is filled in at deploy time: runs start in this checkout.
        pull = deployment["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]
        assert Path(pull["directory"]) == ROOT
    prefect("flow-run", "ls")

    prefect("deployment", "run", deployment_name("ingest"), "--param", f"limit={INGEST_LIMIT}")
    # One poll: the worker takes the run, runs it in a subprocess and waits for it to end.
    worker_out = prefect(
        "worker", "start", "--pool", DEFAULT_POOL, "--run-once", timeout_s=240, both=True
    )
    assert f"'sent': {INGEST_LIMIT}" in worker_out, worker_out[-4000:]
    flow_name = deployment_name("ingest").split("/")[0]
    runs = json.loads(prefect("flow-run", "ls", "--flow-name", flow_name, "-o", "json"))
    assert [run["state_type"] for run in runs] == ["COMPLETED"], runs
    assert DEFAULT_POOL in prefect("work-pool", "ls")
