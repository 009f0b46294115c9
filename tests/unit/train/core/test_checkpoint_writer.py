"""Checkpoints written off the training thread (`stages.train.checkpoint_writer`)."""

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from stages.common.errors import TrainError
from stages.train.checkpoint import ENGINE_DIR, Checkpoints, TrainerState, verify_checkpoint
from stages.train.checkpoint_writer import BackgroundCheckpoints
from stages.train.ranks import SingleRank


class GatedEngine:
    """An engine whose snapshot copies one array and whose writes wait for a gate."""

    def __init__(self) -> None:
        self.weights = np.zeros(1000, np.float32)
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def snapshot(self) -> Callable[[Path], None]:
        copy = self.weights.copy()

        def write(directory: Path) -> None:
            self.gate.wait()
            if self.fail:
                raise OSError(28, "No space left on device")
            (directory / "rank_0").mkdir(parents=True, exist_ok=True)
            np.save(directory / "rank_0" / "weights.npy", copy)

        return write


def _writer(tmp_path: Path) -> tuple[BackgroundCheckpoints, GatedEngine, Checkpoints]:
    engine = GatedEngine()
    ckpts = Checkpoints(tmp_path, keep=2)
    return BackgroundCheckpoints(ckpts, SingleRank(), engine), engine, ckpts  # type: ignore[arg-type]


def test_training_goes_on_while_the_copy_is_written(tmp_path: Path) -> None:
    writer, engine, ckpts = _writer(tmp_path)
    engine.gate.clear()  # the disk is slow
    engine.weights[:] = 1.0
    writer.start(TrainerState(window=5, samples=50))
    engine.weights[:] = 2.0  # the next window trains meanwhile
    assert writer.settle() is None and writer.busy  # not written yet: nothing committed
    assert ckpts.latest() is None
    engine.gate.set()
    final = writer.settle(wait=True)
    assert final is not None and final.name == "ckpt-0000000005" and not writer.busy
    latest = ckpts.latest()
    assert latest is not None and latest[1].window == 5 and latest[1].samples == 50
    assert verify_checkpoint(final) is None  # the writer's checksums cover its files
    saved = np.load(final / ENGINE_DIR / "rank_0" / "weights.npy")
    assert (saved == 1.0).all()  # the state as of the snapshot, not the window after it


def test_a_damaged_background_checkpoint_is_detected(tmp_path: Path) -> None:
    writer, _, _ = _writer(tmp_path)
    writer.start(TrainerState(window=3))
    final = writer.settle(wait=True)
    assert final is not None
    weights = final / ENGINE_DIR / "rank_0" / "weights.npy"
    weights.write_bytes(weights.read_bytes()[:100])
    assert verify_checkpoint(final) is not None


def test_one_checkpoint_in_flight_at_a_time(tmp_path: Path) -> None:
    writer, engine, _ = _writer(tmp_path)
    engine.gate.clear()
    writer.start(TrainerState(window=1))
    with pytest.raises(TrainError, match="already being written"):
        writer.start(TrainerState(window=2))
    engine.gate.set()
    writer.settle(wait=True)
    writer.start(TrainerState(window=2))
    assert writer.settle(wait=True) is not None


def test_a_failed_write_is_an_error_and_commits_nothing(tmp_path: Path) -> None:
    writer, engine, ckpts = _writer(tmp_path)
    engine.fail = True
    writer.start(TrainerState(window=4))
    with pytest.raises(TrainError, match="window 4 could not be written.*No space left"):
        writer.settle(wait=True)
    assert ckpts.latest() is None and not writer.busy


def test_killed_while_writing_restarts_from_the_last_committed(tmp_path: Path) -> None:
    writer, engine, ckpts = _writer(tmp_path)
    writer.start(TrainerState(window=2))
    writer.settle(wait=True)
    engine.gate.clear()
    writer.start(TrainerState(window=4))  # the process dies before this one is committed
    latest = ckpts.latest()
    assert latest is not None and latest[1].window == 2
    engine.gate.set()
    writer.abandon()
    ckpts.clean_stale()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-0000000002"]
