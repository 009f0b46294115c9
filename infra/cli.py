"""`freshrec infra` commands (imports nothing heavy at import time)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from infra.services import ServiceStatus
    from stages.common.settings import CommonSettings


def _settings() -> CommonSettings:
    from stages.common.settings import CommonSettings, load_settings

    return load_settings(CommonSettings)


def _table(statuses: list[ServiceStatus]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="freshrec services")
    table.add_column("service", no_wrap=True)
    table.add_column("url", overflow="fold")
    for column in ("kind", "pid", "healthy"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail", overflow="fold", ratio=1)
    for s in statuses:
        table.add_row(
            s.name,
            s.url,
            "embedded" if s.embedded else "external",
            str(s.pid) if s.pid is not None else "-",
            "[green]yes[/green]" if s.healthy else "[red]no[/red]",
            s.detail,
        )
    Console().print(table)


def _progress(name: str, message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold]{name:<8}[/bold] {message}")


def up(
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds each service may take to start (default: its own, 20-180)."),
    ] = None,
    embed: Annotated[
        list[str] | None,
        typer.Option(
            help="Start this service (kafka, redis, mlflow, prefect) even though its address "
            "is set explicitly, e.g. to run it on another port. Repeatable."
        ),
    ] = None,
    persist_redis: Annotated[
        bool, typer.Option(help="Keep the embedded Redis data across down/up (RDB snapshot).")
    ] = False,
) -> None:
    """Start the embedded services that are not running; check the external ones."""
    from infra.services import UpOptions
    from infra.services import up as services_up

    options = UpOptions(
        embed=frozenset(embed or ()), timeout_s=timeout, redis_persist=persist_redis
    )
    _table(services_up(_settings(), options, progress=_progress))


def down(
    grace: Annotated[
        float, typer.Option(help="Seconds between SIGTERM and SIGKILL.")
    ] = 10.0,
) -> None:
    """Stop the services that `freshrec infra up` started (never external ones)."""
    from infra.services import down as services_down

    stopped = services_down(_settings(), grace_s=grace, progress=_progress)
    if not stopped:
        _progress("infra", "no embedded service was running")


def status(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per service, for scripts.")
    ] = False,
) -> None:
    """Show every service; exit status 1 when any of them is unhealthy."""
    import json
    from dataclasses import asdict

    from infra.services import status as services_status

    statuses = services_status(_settings())
    if as_json:
        for s in statuses:  # urls are redacted already
            typer.echo(json.dumps(asdict(s)))
    else:
        _table(statuses)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the `freshrec` application."""
    infra_app = typer.Typer(
        name="infra",
        help="Embedded services: Kafka-protocol broker, Redis, MLflow, Prefect.",
        no_args_is_help=True,
    )
    infra_app.command("up")(up)
    infra_app.command("down")(down)
    infra_app.command("status")(status)
    app.add_typer(infra_app, name="infra")
