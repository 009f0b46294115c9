"""A trainer process with the NumPy test double, for kill-and-restart tests.

Usage: python -m tests.integration.train.trainer_proc [MAX_WINDOWS]; settings from the
environment (FRESHREC_*, FRESHREC_TRAIN_*), TEST_TRAIN_DELAY seconds of sleep per window.
Prints one line per window, flushed, so the test can follow it.
"""

from __future__ import annotations

import os
import sys

from stages.common.settings import CommonSettings, load_settings
from stages.train.core.engine_protocol import EngineConfig
from stages.train.loop import run_trainer
from stages.train.settings import TrainSettings
from tests.unit.train.core.numpy_engine import NumpyLogisticEngine


def main() -> None:
    delay = float(os.environ.get("TEST_TRAIN_DELAY", "0"))
    max_windows = int(sys.argv[1]) if len(sys.argv) > 1 else None

    def engine(config: EngineConfig) -> NumpyLogisticEngine:
        return NumpyLogisticEngine(config, train_delay=delay)

    summary = run_trainer(
        load_settings(CommonSettings),
        load_settings(TrainSettings),
        max_windows=max_windows,
        engine_factory=engine,
        out=lambda line: print(line, flush=True),
    )
    print(f"done windows={summary.windows} last={summary.last_window}", flush=True)


if __name__ == "__main__":
    main()
