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
        ..., "--source", help="A file of rows in the format of the feature schema (FRESHREC_SCHEMA; plain or .gz), "
        "'-' for stdin, or 'synthetic' (the schema's generator)."
    ),
    rate: float = typer.Option(None, "--rate", help="At most this many events per second."),
    limit: int = typer.Option(None, "--limit", help="Stop after reading this many lines."),
    loop: bool = typer.Option(False, "--loop", help="Read the file again and again."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress lines on stderr."),
    from_start: bool = typer.Option(
        False, "--from-start", help="Send a file from line 1, ignoring its saved position."
    ),
) -> None:
    """Validate rows by the feature schema and send them to the events topic; bad rows go to
    the dead-letter topic with their reasons.

    A file resumes after its last acknowledged line (its position is kept in the state dir);
    a file sent completely sends nothing unless --from-start. Prints progress (events/s, totals)
    to stderr and a final summary. Exit status 1 when some records could not be delivered.
    SIGTERM or Ctrl-C stops reading, flushes what was read and saves the position (exit 0);
    a second one gives up at once.
    """
    from stages.common.settings import CommonSettings, load_settings
    from stages.ingest.run import run_ingest
    from stages.ingest.settings import IngestSettings

    common = load_settings(CommonSettings)
    settings = load_settings(IngestSettings)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():  # the second one: give up at once
            raise KeyboardInterrupt
        name = signal.Signals(signum).name
        print(f"ingest: {name}: stopping, flushing (again to abort)...", file=sys.stderr)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = run_ingest(
            common, settings, source, rate=rate, limit=limit, loop=loop, progress=not quiet,
            stop=stop, from_start=from_start,
        )  # fmt: skip
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"ingest: {summary.describe()}", file=sys.stderr)
    if summary.failed:
        raise typer.Exit(1)
