"""A broker that stops answering for a few seconds delays ingest but loses nothing."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infra.services import RunningService, free_port, start_service
from stages.common.settings import CommonSettings, load_settings
from stages.ingest.core.pacing import IngestSummary
from stages.ingest.run import run_ingest
from stages.ingest.settings import IngestSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[RunningService]:
    """A broker of this test alone (it gets paused, which the shared one must not be)."""
    broker = start_service("kafka", free_port(), tmp_path / "kafka")
    try:
        yield broker
    finally:
        os.killpg(broker.pid, signal.SIGCONT)
        broker.stop()


def test_broker_paused_for_three_seconds_loses_nothing(
    own_broker: RunningService, read_topic: Callable[[str, str], list[tuple[bytes, bytes]]]
) -> None:
    common = load_settings(
        CommonSettings,
        kafka_bootstrap=own_broker.url,
        topic_events="pause.events",
        topic_events_dlq="pause.dlq",
    )
    settings = load_settings(
        IngestSettings, linger_ms=5, delivery_timeout_s=60, progress_interval_s=60
    )
    result: dict[str, IngestSummary] = {}

    def ingest() -> None:
        result["summary"] = run_ingest(
            common, settings, "synthetic", rate=4000, limit=20_000, progress=False
        )

    worker = threading.Thread(target=ingest)
    worker.start()
    time.sleep(1.5)
    os.killpg(own_broker.pid, signal.SIGSTOP)
    time.sleep(3.0)
    os.killpg(own_broker.pid, signal.SIGCONT)
    worker.join(timeout=120)
    assert not worker.is_alive()
    summary = result["summary"]
    assert (summary.read, summary.sent, summary.failed) == (20_000, 20_000, 0)
    keys = [k for k, _ in read_topic(common.kafka_bootstrap, common.topic_events)]
    assert len(set(keys)) == 20_000  # every event; a retried duplicate would only add copies
