"""`freshrec deploy | run | demo` (Prefect is imported inside the commands only)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from stages.common.settings import CommonSettings

STAGES = ("ingest", "features", "train", "publish")


def _point_prefect_at_settings() -> CommonSettings:
    """Make Prefect use the configured server; must run before Prefect is first imported
    (otherwise Prefect reads its own default and may start a temporary server).

    Returns the settings as the user gave them, read BEFORE `PREFECT_API_URL` is exported:
    settings read afterwards would count the default Prefect address as set by the user (an
    external server), so `infra up` would never start the embedded one. Use these settings.
    """
    from stages.common.settings import CommonSettings, load_settings

    common = load_settings(CommonSettings)
    os.environ.setdefault("PREFECT_API_URL", common.prefect_api_url)
    return common


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values are JSON when they parse (numbers, true, null), else strings."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


def deploy_command(
    stage: Annotated[str, typer.Argument(help="ingest, features, train, publish or all")],
    pool: Annotated[str, typer.Option(help="Prefect process work pool")] = "freshrec",
) -> None:
    """Create or update the Prefect deployment of one stage (or all four)."""
    _point_prefect_at_settings()
    from flows.deployments import deploy, deploy_all, deployment_name

    if stage not in (*STAGES, "all"):
        raise typer.BadParameter(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}, all")
    ids = deploy_all(pool) if stage == "all" else {stage: deploy(stage, pool)}
    for name, deployment_id in ids.items():
        typer.echo(f"deployed {deployment_name(name)} ({deployment_id}) to work pool {pool}")
    typer.echo(f"start a worker to run them: prefect worker start --pool {pool}")


def run_command(
    stage: Annotated[str, typer.Argument(help="ingest, features, train or publish")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="flow parameter KEY=VALUE")
    ] = None,
) -> None:
    """Run one stage's flow in the foreground (tracked by the Prefect server)."""
    _point_prefect_at_settings()
    from flows.stages import FLOWS

    if stage not in FLOWS:
        raise typer.BadParameter(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    result = FLOWS[stage](**_parse_params(param or []))
    typer.echo(json.dumps(result, default=str))


def demo_command(
    duration: Annotated[float, typer.Option(help="seconds of streaming")] = 180.0,
    source: Annotated[
        str, typer.Option(help="synthetic (the schema's generator), or a file in its format")
    ] = "synthetic",
    rate: Annotated[float, typer.Option(help="events per second")] = 2000.0,
    serve_port: Annotated[int, typer.Option(help="port of the demo's serving process")] = 8765,
) -> None:
    """The whole pipeline on this machine: services, deployments, live progress, serving."""
    common = _point_prefect_at_settings()
    from rich.console import Console

    from flows.demo import DemoOptions, run_demo

    summary = run_demo(
        common,
        DemoOptions(duration_s=duration, source=source, rate=rate, serve_port=serve_port),
        Console(),
    )
    raise typer.Exit(0 if summary.ok else 1)


def register(app: typer.Typer) -> None:
    """Add the flow commands to the `freshrec` application."""
    app.command("deploy")(deploy_command)
    app.command("run")(run_command)
    app.command("demo")(demo_command)
