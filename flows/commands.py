"""`freshrec deploy | run | demo` (Prefect is imported inside the commands only)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the flow commands to the `freshrec` application."""
