"""The four deployments land on a real Prefect server with their schedules and limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.deployments import SPECS, deploy_all
from stages.common.settings import CommonSettings

pytestmark = pytest.mark.integration


async def _read(ids: dict[str, Any]) -> dict[str, Any]:
    async with get_client() as client:
        return {stage: await client.read_deployment(i) for stage, i in ids.items()}


def test_deploy_all_creates_four_deployments(make_settings: Callable[..., CommonSettings]) -> None:
    common = make_settings("prefect")
    # Prefect was imported at collection time: point it at the server through its own settings
    # API (an environment variable set now would be ignored and a temporary server started).
    with temporary_settings(updates={PREFECT_API_URL: common.prefect_api_url}):
        ids = deploy_all(pool="freshrec-test", paused=True)
        assert set(ids) == set(SPECS)
        deployments = asyncio.run(_read(ids))
        for deployment in deployments.values():
            assert deployment.work_pool_name == "freshrec-test"
            assert deployment.entrypoint.startswith("flows/stages.py:")
        publish = deployments["publish"]
        assert publish.schedules[0].schedule.interval.total_seconds() == 120
        assert publish.paused
        # Deploying again updates in place: same ids.
        assert deploy_all(pool="freshrec-test", paused=True) == ids
