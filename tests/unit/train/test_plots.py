"""The trainer's plots: the bounded history, the PNGs, and their trip through the outbox
(rendered in the sender thread, a newer one replacing a queued one, a failing render dropped)."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from stages.train.core.metrics import window_metrics
from stages.train.core.report import WindowReport
from stages.train.outbox import OutboxConfig, TrackingOutbox
from stages.train.plots import PROGRESSIVE_PNG, TABLE_PNG, WindowHistory, render_plots

PNG = b"\x89PNG\r\n\x1a\n"


def report(window: int, one_class: bool = False) -> WindowReport:
    rng = np.random.default_rng(window)
    labels = np.zeros(50) if one_class else (rng.random(50) < 0.3).astype(float)
    preds = np.clip(0.3 + 0.2 * (labels - 0.3) + rng.normal(0, 0.1, 50), 0.01, 0.99)
    return WindowReport(window=window, first_seq=window, last_seq=window,
                        metrics=window_metrics(labels, preds), train_loss=0.5, seconds=0.1,
                        samples_per_second=500.0, table_size=100 * window, evicted=0)


def test_history_keeps_the_newest_windows() -> None:
    history = WindowHistory(limit=10)
    for w in range(1, 26):
        history.add(report(w))
    points = history.snapshot()
    assert [p.window for p in points] == list(range(16, 26))
    assert points[-1].table_size == 2500 and len(history) == 10


def test_history_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        WindowHistory(0)


def test_render_writes_two_pngs_with_nan_gaps(tmp_path: Path) -> None:
    history = WindowHistory(100)
    for w in range(1, 30):
        history.add(report(w, one_class=(w == 7)))  # window 7: AUC undefined (nan)
    assert math.isnan(history.snapshot()[6].auc)
    paths = render_plots(history.snapshot(), tmp_path)
    assert [p.name for p in paths] == [PROGRESSIVE_PNG, TABLE_PNG]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 5_000


def test_render_of_no_windows(tmp_path: Path) -> None:
    assert all(p.read_bytes().startswith(PNG) for p in render_plots((), tmp_path))


class ArtifactSink:
    def __init__(self) -> None:
        self.uploads: list[tuple[str, list[str]]] = []
        self.gate = threading.Event()
        self.thread_names: list[str] = []

    def send_metrics(self, values: dict[str, float], step: int, timestamp_ms: int) -> None:
        self.gate.wait(5)

    def send_tag(self, key: str, value: str) -> None:
        pass

    def send_export(self, directory: Path, export_seq: int) -> None:
        pass

    def send_input(self, item: object) -> None:
        pass

    def send_artifacts(self, directory: Path, artifact_path: str) -> None:
        self.thread_names.append(threading.current_thread().name)
        self.uploads.append((artifact_path, sorted(p.name for p in directory.iterdir())))


def test_plots_render_in_the_sender_and_a_newer_one_replaces_a_queued_one(
    tmp_path: Path,
) -> None:
    sink = ArtifactSink()
    outbox = TrackingOutbox(sink, OutboxConfig(directory=tmp_path / "outbox"))
    outbox.start()
    outbox.put_metrics({"auc": 0.7}, 1)  # held by the sink: the plots below wait behind it
    time.sleep(0.2)
    rendered: list[int] = []

    def render(n: int):  # type: ignore[no-untyped-def]
        def write(directory: Path) -> None:
            rendered.append(n)
            render_plots((), directory)
        return write

    for n in range(3):
        outbox.put_artifacts("plots", render(n))
    assert outbox.backlog() == 2  # the metrics in flight and one plots record
    sink.gate.set()
    assert outbox.close(10) == 0
    assert rendered == [2]
    assert sink.uploads == [("plots", [PROGRESSIVE_PNG, TABLE_PNG])]
    assert sink.thread_names == ["tracking-outbox"]


def test_a_failing_render_is_dropped_not_retried(tmp_path: Path) -> None:
    sink = ArtifactSink()
    sink.gate.set()
    outbox = TrackingOutbox(sink, OutboxConfig(directory=tmp_path / "outbox"))
    outbox.start()

    def broken(directory: Path) -> None:
        raise RuntimeError("no fonts")

    outbox.put_artifacts("plots", broken)
    outbox.put_tag("after", "x")
    assert outbox.close(10) == 0
    assert outbox.dropped == 1 and outbox.failures == 0 and sink.uploads == []
