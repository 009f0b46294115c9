"""The stage flows, run under Prefect's test harness against the real broker and Redis:
ingest a real Criteo file, then the features flow stores every event as a sample."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prefect.settings import PREFECT_API_URL
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
    # Straight to the REST API: Prefect 3.8.8's client sends null for the filters it was not
    # given, and its own server answers 422.
    response = httpx.post(
        f"{PREFECT_API_URL.value()}/artifacts/filter",
        json={"artifacts": {"key": {"any_": keys}}, "limit": 50, "offset": 0, "sort": "CREATED_DESC"},
        timeout=30,
    )
    response.raise_for_status()
    return {a["key"] for a in response.json()}


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
    stored = features_flow(max_idle_s=8.0, duration_s=120.0)
    assert stored["samples_out"] == 1000 and stored["dead_letters"] == 0
    wanted = ["ingest-summary", "features-summary"]
    assert _artifact_keys(wanted) == set(wanted)
