"""The trainer's Prometheus endpoint during a real run on Redis and MLflow, read with
prometheus_client's own text parser: the counters match what the run did, the backlog follows
the store, and the port is loopback-only and closed at the end."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.services.ports import free_port
from stages.common.settings import CommonSettings, load_settings
from stages.train.core.engine_protocol import EngineConfig
from stages.train.loop import run_trainer
from stages.train.settings import TrainSettings
from stages.train.trainer import TrainSummary
from tests.integration.train.conftest import write_blocks
from tests.unit.train.core.numpy_engine import NumpyLogisticEngine

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def scrape(port: int) -> dict[str, Any]:
    """{sample name: value} of every sample, and {"info": labels} of the trainer's info."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "freshrec_trainer_info":
                values["info"] = sample.labels
            else:
                values[sample.name] = sample.value
    return values


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_the_setting_reads_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(TrainSettings).metrics_port is None
    monkeypatch.setenv("FRESHREC_TRAIN_METRICS_PORT", "9464")
    assert load_settings(TrainSettings).metrics_port == 9464


def test_metrics_endpoint_counts_the_run(common: CommonSettings) -> None:
    write_blocks(common.redis_url, common.redis_namespace, 1, 10, 50)
    port = free_port()
    settings = TrainSettings(
        embedding_dim=2, hidden_units=(4,), batch_size=64, window_samples=100,
        window_seconds=600.0, checkpoint_every=2, export_every=2, metrics_port=port,
        consumer_name="metrics-test",
    )
    engines: list[NumpyLogisticEngine] = []

    def factory(config: EngineConfig) -> NumpyLogisticEngine:
        engines.append(NumpyLogisticEngine(config))
        return engines[-1]

    lines: list[str] = []
    stop = threading.Event()
    result: dict[str, TrainSummary] = {}
    errors: list[BaseException] = []

    def train() -> None:
        try:
            result["summary"] = run_trainer(common, settings, stop=stop, engine_factory=factory,
                                            out=lines.append)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=train, name="trainer")
    thread.start()
    try:
        wait_for(lambda: len(lines) == 5 or bool(errors), "5 windows")
        assert not errors
        first = scrape(port)
        assert first["freshrec_trainer_windows_total"] == 5
        assert first["freshrec_trainer_samples_total"] == 500
        assert first["freshrec_trainer_window"] == 5
        assert first["freshrec_trainer_backlog_blocks"] == 0
        assert first["freshrec_trainer_table_size"] == engines[0].table_size()
        assert first["freshrec_trainer_admissions_total"] == engines[0].table_size()
        assert first["freshrec_trainer_exports_total"] == 2  # windows 2 and 4
        assert first["freshrec_trainer_exports_skipped_total"] == 0
        assert first["freshrec_trainer_store_resets_total"] == 0
        assert 0 < first["freshrec_trainer_window_auc"] <= 1
        assert first["freshrec_trainer_window_logloss"] > 0
        assert first["freshrec_trainer_samples_per_second"] > 0
        assert first["freshrec_trainer_tracking_backlog"] >= 0
        assert first["freshrec_trainer_tracking_failures_total"] == 0
        assert first["info"] == {"consumer": "metrics-test", "model_type": "wide_deep",
                                 "source": "store"}

        # four blocks more: the backlog counts what the store holds beyond the trainer
        write_blocks(common.redis_url, common.redis_namespace, 11, 4, 50)
        wait_for(lambda: len(lines) == 7 or bool(errors), "7 windows")
        second = scrape(port)
        assert second["freshrec_trainer_windows_total"] == 7
        assert second["freshrec_trainer_samples_total"] == 700
        assert second["freshrec_trainer_backlog_blocks"] == 0
        # half a window: read, not trained, so still the backlog
        write_blocks(common.redis_url, common.redis_namespace, 15, 1, 50)
        wait_for(lambda: scrape(port)["freshrec_trainer_backlog_blocks"] == 1, "backlog 1", 10)
    finally:
        stop.set()
        thread.join(120)
    assert not errors and not thread.is_alive()
    summary = result["summary"]
    assert (summary.windows, summary.samples) == (7, 700)
    assert (second["freshrec_trainer_windows_total"],
            second["freshrec_trainer_samples_total"]) == (summary.windows, summary.samples)
    with pytest.raises(OSError):
        scrape(port)  # the endpoint closes with the trainer
