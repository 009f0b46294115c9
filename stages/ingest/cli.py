"""`freshrec ingest` commands (imports nothing heavy at import time)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the `freshrec` application."""
    app.command("ingest")(ingest)


def ingest(
    source: str = typer.Option(
        ..., "--source", help="A Criteo TSV file (plain or .gz), '-' for stdin, or 'synthetic'."
    ),
    rate: float = typer.Option(None, "--rate", help="At most this many events per second."),
    limit: int = typer.Option(None, "--limit", help="Stop after reading this many lines."),
    loop: bool = typer.Option(False, "--loop", help="Read the file again and again."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress lines on stderr."),
) -> None:
    """Validate rows and send them to the events topic; bad rows go to the dead-letter topic.

    Prints progress (events/s, totals) to stderr and a final summary. Exit status 1 when some
    records could not be delivered. Ctrl-C stops reading, then flushes what was read.
    """
    from stages.common.settings import CommonSettings, load_settings
    from stages.ingest.run import run_ingest
    from stages.ingest.settings import IngestSettings

    common = load_settings(CommonSettings)
    settings = load_settings(IngestSettings)
    stop = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        if stop.is_set():  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        print("ingest: stopping (Ctrl-C again to abort)...", file=sys.stderr)
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        summary = run_ingest(
            common, settings, source, rate=rate, limit=limit, loop=loop, progress=not quiet,
            stop=stop,
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    print(f"ingest: {summary.describe()}", file=sys.stderr)
    if summary.failed:
        raise typer.Exit(1)
