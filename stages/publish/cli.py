"""`freshrec publish`, `freshrec publish rollback`, `freshrec serve`, `freshrec evaluate`.

Imports nothing heavy at import time: MLflow, Starlette and uvicorn load inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the `freshrec` application."""
    publish = typer.Typer(
        invoke_without_command=True, no_args_is_help=False,
        help="Register trainer exports as model versions (full / delta) and move the aliases.",
    )

    @publish.callback()
    def publish_main(
        ctx: typer.Context,
        once: bool = typer.Option(False, "--once", help="Run one cycle and exit."),
        interval: float | None = typer.Option(None, "--interval", help="Seconds between cycles."),
    ) -> None:
        if ctx.invoked_subcommand is not None:
            return
        from stages.common.settings import CommonSettings, load_settings
        from stages.publish.publisher import run_publisher
        from stages.publish.settings import PublishSettings

        summary = run_publisher(load_settings(CommonSettings), load_settings(PublishSettings),
                                once=once, interval_s=interval)
        typer.echo(json.dumps(summary.__dict__))

    @publish.command("rollback")
    def rollback() -> None:
        """Move `production` back to the previous production version."""
        from stages.common.settings import CommonSettings, load_settings
        from stages.publish.registry import Registry

        before, after = Registry(load_settings(CommonSettings)).rollback()
        typer.echo(json.dumps({"production": {"from": before, "to": after}}))

    app.add_typer(publish, name="publish")

    @app.command("serve")
    def serve(
        model: str | None = typer.Option(None, "--model", help="Registered model (default: "
                                          "FRESHREC_MODEL_NAME)."),
        alias: str = typer.Option("production", "--alias", help="Alias to follow."),
        host: str = typer.Option("127.0.0.1", "--host"),
        port: int = typer.Option(8000, "--port", min=1, max=65535),
        token_file: Path | None = typer.Option(
            None, "--token-file", exists=True, dir_okay=False,
            help="File holding the bearer token /predict, /invocations and /version require "
            "(instead of "
            "FRESHREC_PUBLISH_SERVE_TOKEN; never pass a token on the command line, `ps` shows "
            "it).",
        ),
        max_concurrency: int | None = typer.Option(
            None, "--max-concurrency", min=1,
            help="Most predictions at once, more get 503 (default: "
            "FRESHREC_PUBLISH_SERVE_MAX_CONCURRENCY).",
        ),
        workers: int | None = typer.Option(
            None, "--workers", min=1, max=64,
            help="Serving processes behind the port, each following the alias itself "
            "(default: FRESHREC_PUBLISH_SERVE_WORKERS); /metrics counts per process.",
        ),
        access_log: bool = typer.Option(
            False, "--access-log/--no-access-log",
            help="Log every request (off by default: one log line per request costs more "
            "than scoring one row; GET /metrics counts requests by endpoint and status).",
        ),
    ) -> None:
        """Serve predictions for Criteo rows with the version under an alias: POST /predict,
        POST /invocations (MLflow's scoring protocol), GET /ping, /health, /version,
        /metrics (Prometheus), /docs (OpenAPI)."""
        from stages.publish.serve_main import ServeOptions
        from stages.publish.serve_main import serve as serve_app

        serve_app(ServeOptions(model, alias, str(token_file.resolve()) if token_file else None,
                               max_concurrency, workers), host, port, access_log)

    @app.command("evaluate")
    def evaluate(
        model: str = typer.Option(..., "--model", help="models:/NAME@ALIAS, models:/NAME/"
                                  "VERSION, or an export directory / directory of exports."),
        data: Path = typer.Option(..., "--data", help="Labelled raw rows in the format of the "
                                  "model's feature schema, e.g. Criteo TSV (.gz ok)."),
    ) -> None:
        """Print AUC, logloss, NE, calibration and count of a model on a file (one JSON line).
        The rows are read with the model's feature schema (its version's, or the preset of
        its export); FRESHREC_SCHEMA set to another schema is refused."""
        from stages.common.settings import CommonSettings, load_settings
        from stages.publish.evaluate import evaluate_file, load_model

        loaded = load_model(load_settings(CommonSettings), model)
        metrics, skipped = evaluate_file(loaded, data)
        typer.echo(json.dumps({**metrics.to_dict(), "skipped": skipped, "model": model,
                               "version": loaded.version or None}))
