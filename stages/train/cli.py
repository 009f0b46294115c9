"""`freshrec train` (imports nothing heavy at import time)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the `freshrec` application."""

    @app.command("train")
    def train(
        replay: Annotated[
            Optional[Path],  # noqa: UP007 - typer reads the annotation at runtime
            typer.Option(
                "--replay",
                help="Train one pass over this file of rows in the feature schema's format "
                "(FRESHREC_SCHEMA; plain or .gz), then stop.",
                exists=True,
                dir_okay=False,
            ),
        ] = None,
        max_windows: Annotated[
            Optional[int],  # noqa: UP007
            typer.Option("--max-windows", min=1, help="Stop after this many windows."),
        ] = None,
    ) -> None:
        """Run the resident trainer on the feature store until SIGINT/SIGTERM (settings:
        FRESHREC_TRAIN_*, checkpoints in FRESHREC_CHECKPOINT_DIR). Under horovodrun every
        rank runs this same command."""
        import signal
        import threading

        from stages.common.settings import CommonSettings, load_settings
        from stages.train.settings import TrainSettings
        from stages.train.tracking import probe_tracking_server

        common = load_settings(CommonSettings)
        probe_tracking_server(common)  # before TensorFlow loads: a missing server fails in seconds
        from stages.train.tf_quiet import import_tensorflow

        import_tensorflow()
        from stages.train.loop import run_trainer

        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        summary = run_trainer(
            common,
            load_settings(TrainSettings),
            replay=replay,
            max_windows=max_windows,
            stop=stop,
        )
        result = {k: v for k, v in summary.__dict__.items() if k != "last_report"}
        if summary.last_report is not None:
            result["last_window_metrics"] = summary.last_report.as_metrics()
        typer.echo(json.dumps(result))
