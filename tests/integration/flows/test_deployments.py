"""The four deployments land on a real Prefect server with their schedules and limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from stages.common.settings import CommonSettings

pytestmark = pytest.mark.integration


def test_deploy_all_creates_four_deployments(
    make_settings: Callable[..., CommonSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    common = make_settings("prefect")
    monkeypatch.setenv("PREFECT_API_URL", common.prefect_api_url)
    from prefect.client.orchestration import get_client

    from flows.deployments import SPECS, deploy_all

    ids = deploy_all(pool="freshrec-test", paused=True)
    assert set(ids) == set(SPECS)

    async def read() -> dict[str, object]:
        async with get_client() as client:
            return {stage: await client.read_deployment(i) for stage, i in ids.items()}

    deployments = asyncio.run(read())
    for stage, deployment in deployments.items():
        assert deployment.work_pool_name == "freshrec-test"  # type: ignore[attr-defined]
        assert deployment.entrypoint.startswith("flows/stages.py:")  # type: ignore[attr-defined]
    publish = deployments["publish"]
    assert publish.schedules[0].schedule.interval.total_seconds() == 120  # type: ignore[attr-defined]
    assert publish.paused  # type: ignore[attr-defined]
    # Deploying again updates in place: same ids.
    assert deploy_all(pool="freshrec-test", paused=True) == ids
