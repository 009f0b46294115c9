"""`freshrec train` commands (imports nothing heavy at import time)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the `freshrec` application."""
