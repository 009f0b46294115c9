"""The trainer's tracking outbox: order, outages, refusals, bounds, spilled exports."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from stages.common.model_export import MANIFEST, ModelExport, ModelSpec, read_manifest
from stages.train.outbox import OutboxConfig, TrackingOutbox, is_outage

SPEC = ModelSpec("wide_deep", 2, (4,))


def export(seq: int, base: int | None = None) -> ModelExport:
    return ModelExport(
        spec=SPEC, kind="full" if base is None else "delta", export_seq=seq, base_seq=base,
        dense={"wide/bias": np.zeros(1, np.float32)},
        ids=np.arange(3, dtype=np.uint64), rows=np.ones((3, SPEC.row_width), np.float32),
    )


class Refused(Exception):
    error_code = "INVALID_PARAMETER_VALUE"


class FakeSink:
    """Records what reached "MLflow"; `down` makes every call fail like a stopped server."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []
        self.down = threading.Event()
        self.refuse: set[str] = set()

    def _check(self, what: str) -> None:
        if self.down.is_set():
            raise ConnectionError("connection refused")
        if what in self.refuse:
            raise Refused(what)

    def send_metrics(self, values: dict[str, float], step: int, timestamp_ms: int) -> None:
        self._check("metrics")
        self.sent.append(("metrics", step))

    def send_tag(self, key: str, value: str) -> None:
        self._check("tag")
        self.sent.append(("tag", key))

    def send_export(self, directory: Path, export_seq: int) -> None:
        self._check("export")
        assert read_manifest(directory)["export_seq"] == export_seq
        self.sent.append(("export", export_seq))


def wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.005)


def make(tmp_path: Path, **kw: object) -> tuple[FakeSink, TrackingOutbox]:
    sink = FakeSink()
    config = OutboxConfig(directory=tmp_path / "outbox", backoff_s=0.01, backoff_max_s=0.02,
                          **kw)  # type: ignore[arg-type]
    box = TrackingOutbox(sink, config)
    assert box.recover("run", 0) == 0
    return sink, box


def test_sends_in_order_and_deletes_uploaded_exports(tmp_path: Path) -> None:
    sink, box = make(tmp_path)
    box.start()
    box.put_metrics({"auc": 0.7}, 1)
    box.put_export(export(1))
    box.put_tag("k", "v")
    box.put_export(export(2, 1))
    assert box.close(5.0) == 0
    assert sink.sent == [("metrics", 1), ("export", 1), ("tag", "k"), ("export", 2)]
    assert box.uploaded_exports == 2 and box.last_uploaded_seq == 2
    assert [p.name for p in (tmp_path / "outbox").iterdir() if p.is_dir()] == []


def test_an_outage_queues_then_catches_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    sink, box = make(tmp_path)
    sink.down.set()
    box.start()
    for step in range(1, 6):
        box.put_metrics({"auc": 0.5}, step)
    box.put_export(export(1))
    wait_for(lambda: box.failures >= 3)
    assert box.backlog() == 6 and sink.sent == []
    assert (tmp_path / "outbox" / "00000001" / MANIFEST).is_file()  # spilled while down
    sink.down.clear()
    assert box.close(5.0) == 0
    assert sink.sent == [("metrics", s) for s in range(1, 6)] + [("export", 1)]
    text = caplog.text
    assert "MLflow is unreachable" in text and "MLflow is back after" in text


def test_refused_records_are_dropped_but_exports_never(tmp_path: Path) -> None:
    sink, box = make(tmp_path, max_attempts=3)
    sink.refuse = {"tag", "export"}
    box.start()
    box.put_tag("bad", "x")
    box.put_export(export(1))
    box.put_metrics({"auc": 0.5}, 1)
    wait_for(lambda: box.dropped == 1 and box.failures >= 6)
    assert box.pending_exports() == 1 and sink.sent == []  # the export holds the queue
    sink.refuse = set()
    assert box.close(5.0) == 0
    assert sink.sent == [("export", 1), ("metrics", 1)]
    assert not is_outage(Refused()) and is_outage(ConnectionError())


def test_bounds_records_and_exports(tmp_path: Path) -> None:
    sink, box = make(tmp_path, max_exports=2, max_records=3)
    for step in range(1, 6):
        box.put_metrics({"x": 1.0}, step)
    assert box.backlog() == 3 and box.dropped == 2
    box.put_export(export(1))
    assert not box.exports_full()
    box.put_export(export(2, 1))
    assert box.exports_full()
    with pytest.raises(ValueError, match="does not follow"):
        box.put_export(export(4, 2))
    box.start()
    assert box.close(5.0) == 0
    # the oldest record after the head was dropped: steps 1, 4, 5 survive
    assert sink.sent == [("metrics", 1), ("metrics", 4), ("metrics", 5), ("export", 1),
                         ("export", 2)]


def test_close_while_down_keeps_exports_for_the_restart(tmp_path: Path) -> None:
    sink, box = make(tmp_path)
    sink.down.set()
    box.start()
    box.put_export(export(1))
    box.put_export(export(2, 1))
    assert box.close(0.2) == 2
    # an incomplete spill (no manifest) and an already uploaded one are dropped at restart
    (tmp_path / "outbox" / "00000003").mkdir()
    sink2 = FakeSink()
    again = TrackingOutbox(sink2, OutboxConfig(directory=tmp_path / "outbox", backoff_s=0.01))
    assert again.recover("run", 1) == 2
    assert not (tmp_path / "outbox" / "00000001").exists()
    assert not (tmp_path / "outbox" / "00000003").exists()
    again.start()
    again.put_export(export(3, 2))
    assert again.close(5.0) == 0
    assert sink2.sent == [("export", 2), ("export", 3)]


def test_an_outbox_of_another_run_is_discarded(tmp_path: Path) -> None:
    sink, box = make(tmp_path)
    box.put_export(export(1))
    other = TrackingOutbox(FakeSink(), OutboxConfig(directory=tmp_path / "outbox"))
    assert other.recover("another-run", 0) == 0
    assert other.backlog() == 0 and not (tmp_path / "outbox" / "00000001").exists()
