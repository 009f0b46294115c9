"""The stage flows, run under Prefect's test harness against the real broker and Redis:
ingest a real Criteo file, then the features flow stores every event as a sample."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from uuid import UUID

import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.stages import features_flow, ingest_flow
from stages.common.settings import CommonSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _env(monkeypatch: pytest.MonkeyPatch, common: CommonSettings) -> None:
    # The flows load their settings from the environment, like a deployment's worker.
    monkeypatch.setenv("FRESHREC_KAFKA_BOOTSTRAP", common.kafka_bootstrap)
    monkeypatch.setenv("FRESHREC_REDIS_URL", common.redis_url)
    monkeypatch.setenv("FRESHREC_REDIS_NAMESPACE", common.redis_namespace)
    monkeypatch.setenv("FRESHREC_TOPIC_EVENTS", common.topic_events)
    monkeypatch.setenv("FRESHREC_TOPIC_EVENTS_DLQ", common.topic_events_dlq)
    monkeypatch.setenv("FRESHREC_FEATURES_GROUP", f"{common.redis_namespace}-g")
    monkeypatch.setenv("FRESHREC_STATE_DIR", str(common.state_dir))


def _artifact_keys(keys: list[str]) -> set[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)), limit=50
        )
    return {a.key for a in found if a.key}


def _log_names(flow_run_id: UUID) -> dict[str, list[str]]:
    """logger name -> messages of a flow run, read back through Prefect's API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
        )
    names: dict[str, list[str]] = {}
    for record in logs:
        names.setdefault(record.name, []).append(record.message)
    return names


def test_ingest_then_features_flows(
    harness: None,
    make_settings: Callable[..., CommonSettings],
    monkeypatch: pytest.MonkeyPatch,
    criteo_tiny: Path,
) -> None:
    common = make_settings("kafka", "redis")
    _env(monkeypatch, common)
    ingested = ingest_flow(source=str(criteo_tiny))
    assert ingested["read"] == 1000 and ingested["sent"] == 1000 and ingested["dead_lettered"] == 0
    state = features_flow(max_idle_s=8.0, duration_s=120.0, return_state=True)
    stored = state.result()
    assert stored["samples_out"] == 1000 and stored["dead_letters"] == 0
    wanted = ["ingest-summary", "features-summary", "features-progress"]
    assert _artifact_keys(wanted) == set(wanted)
    # the stage modules' own log lines are in the flow run's logs, not only the flow's
    names = _log_names(state.state_details.flow_run_id)
    stage_lines = {n: m for n, m in names.items() if n.startswith(("stages.", "freshrec."))}
    assert stage_lines, f"no stage logger in the flow run's logs: {sorted(names)}"
