"""The four deployments, one per stage, on a Prefect process work pool.

`prefect.yaml` at the repository root describes the same deployments for `prefect deploy --all`;
this module does it from Python for `freshrec deploy` and the demo. Code is taken from the local
project directory (a process worker on the same host, or any host with the same checkout).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists

from flows.stages import FLOWS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POOL = "freshrec"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeploymentSpec:
    """How one stage is deployed: its default parameters, schedule and concurrency."""

    stage: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    interval_s: float | None = None
    concurrency_limit: int | None = 1


SPECS = {
    "ingest": DeploymentSpec(
        "ingest",
        "Ingest a file of the feature schema, stdin or the synthetic stream into Kafka "
        "(run on demand).",
        {"source": "synthetic", "rate": 2000.0, "limit": 100000},
        concurrency_limit=None,
    ),
    "features": DeploymentSpec(
        "features", "Long-running Faust worker: events -> Redis feature store, exactly once."
    ),
    "train": DeploymentSpec(
        "train", "Long-running resident trainer: windows from the feature store, checkpoints."
    ),
    "publish": DeploymentSpec(
        "publish",
        "Every 2 minutes: register the trainer's new exports in the MLflow model registry.",
        {"once": True},
        interval_s=120,
    ),
}


def deployment_name(stage: str) -> str:
    """The full `flow/deployment` name of a stage's deployment."""
    return f"{FLOWS[stage].name}/{stage}"


async def ensure_work_pool(name: str = DEFAULT_POOL) -> None:
    """Create the process work pool `name` if it does not exist."""
    async with get_client() as client:
        try:
            await client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            log.info("created process work pool %s", name)
        except ObjectAlreadyExists:
            pass


def deploy(stage: str, pool: str = DEFAULT_POOL, paused: bool = False) -> UUID:
    """Create or update the deployment of `stage` (one of ingest, features, train, publish)."""
    spec = SPECS[stage]
    asyncio.run(ensure_work_pool(pool))
    entrypoint = f"flows/stages.py:{FLOWS[stage].fn.__name__}"
    # Prefect's sync/async dual functions type as a union with a coroutine; here they are sync.
    flow: Any = FLOWS[stage].from_source(source=str(PROJECT_ROOT), entrypoint=entrypoint)
    # A process pool runs the code where it is: no image to build or push.
    deployment_id: UUID = flow.deploy(
        name=stage,
        work_pool_name=pool,
        parameters=spec.parameters,
        interval=spec.interval_s,
        paused=paused if spec.interval_s else None,
        concurrency_limit=spec.concurrency_limit,
        description=spec.description,
        tags=["freshrec", stage],
        print_next_steps=False,
        ignore_warnings=True,
    )
    return deployment_id


def deploy_all(pool: str = DEFAULT_POOL, paused: bool = False) -> dict[str, UUID]:
    """Deploy the four stages; returns stage -> deployment id."""
    return {stage: deploy(stage, pool, paused) for stage in SPECS}
