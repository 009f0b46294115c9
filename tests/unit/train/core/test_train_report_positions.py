import math

import numpy as np

from stages.common.samples import SampleBatch, SampleBlock, SourceRange
from stages.train.core.metrics import WindowMetrics
from stages.train.core.positions import SeqGap, StorePosition, advance
from stages.train.core.report import WindowReport


def _report(missed: int = 0, auc: float = 0.74123) -> WindowReport:
    metrics = WindowMetrics(
        samples=8192, positives=2000, auc=auc, logloss=0.47119, ne=0.89234,
        calibration=1.0213, mean_prediction=0.25, ctr=0.2441,
    )
    return WindowReport(
        window=12, first_seq=37, last_seq=40, metrics=metrics, train_loss=0.46,
        seconds=0.784, samples_per_second=10449.7, table_size=123456, evicted=0,
        missed_blocks=missed,
    )


def test_report_line() -> None:
    assert _report().line() == (
        "window 12 n=8192 auc=0.7412 logloss=0.4712 ne=0.8923 cal=1.021 sps=10450 table=123456"
    )
    assert _report(missed=3, auc=math.nan).line().endswith("auc=nan logloss=0.4712 ne=0.8923 "
                                                           "cal=1.021 sps=10450 table=123456 missed=3")


def test_report_metrics_leave_out_nan() -> None:
    values = _report(auc=math.nan).as_metrics()
    assert "auc" not in values and values["samples"] == 8192.0 and values["table_size"] == 123456.0


def _block(seq: int) -> SampleBlock:
    batch = SampleBatch.empty(13, 26)
    return SampleBlock(seq, SourceRange("t", 0, seq, seq), batch)


def test_advance_detects_gaps_and_duplicates() -> None:
    start = StorePosition("5-0", 4)
    entries = [("6-0", _block(5)), ("7-0", _block(8)), ("8-0", _block(8)), ("9-0", _block(9))]
    out = advance(start, entries)
    assert [b.seq for b in out.blocks] == [5, 8, 9]
    assert out.gaps == [SeqGap(6, 7)] and out.missed_blocks == 2
    assert out.duplicates == 1
    assert out.position == StorePosition("9-0", 9)


def test_advance_from_the_start_reports_trimmed_head() -> None:
    out = advance(StorePosition(), [("3-0", _block(3))])
    assert out.gaps == [SeqGap(1, 2)]


def test_advance_with_nothing_keeps_position() -> None:
    start = StorePosition("5-0", 4)
    assert advance(start, []).position == start
    assert np.asarray(advance(start, []).blocks).size == 0


def test_window_takes_whole_blocks_until_n_samples() -> None:
    from stages.train.loop import _window_size
    from stages.train.sources import Chunk

    def chunk(n: int) -> Chunk:
        batch = SampleBatch.empty(13, 26) if n == 0 else SampleBatch(
            np.zeros(n, np.uint8), np.zeros((n, 13), np.float32),
            np.zeros((n, 26), np.uint64), np.zeros(n, np.int64),
        )
        return Chunk(batch, 1, 1, "1-0")

    chunks = [chunk(60), chunk(0), chunk(50), chunk(70)]
    assert _window_size(chunks, 100) == 3  # 110 rows: blocks are not split
    assert _window_size(chunks, 500) == 0
    assert _window_size(chunks, 60) == 1
