"""`freshrec features` commands (imports nothing heavy at import time)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the `freshrec` application."""
    features = typer.Typer(
        help="Events topic -> Redis feature store (Faust worker, exactly once).",
        invoke_without_command=True,
        no_args_is_help=False,
    )

    @features.callback()
    def run(
        ctx: typer.Context,
        max_idle_s: Annotated[
            Optional[float],  # noqa: UP007 - typer reads the annotation at runtime
            typer.Option("--max-idle-s", help="Stop after this many seconds without events."),
        ] = None,
    ) -> None:
        """Run the features worker until SIGINT/SIGTERM (settings: FRESHREC_FEATURES_*)."""
        if ctx.invoked_subcommand is not None:
            return
        from stages.common.settings import CommonSettings, load_settings
        from stages.features.runner import run_features
        from stages.features.settings import FeaturesSettings

        summary = run_features(
            load_settings(CommonSettings), load_settings(FeaturesSettings), max_idle_s=max_idle_s
        )
        typer.echo(json.dumps(summary.__dict__))

    @features.command("status")
    def status() -> None:
        """Print the store's schema, counters, watermarks and gaps of this namespace as JSON."""
        from stages.common.settings import CommonSettings, load_settings
        from stages.features.readback import (
            read_counters,
            read_gaps,
            read_store_schema,
            read_topic_id,
            read_watermarks,
        )

        common = load_settings(CommonSettings)
        import redis

        password = common.redis_password.get_secret_value() if common.redis_password else None
        client = redis.Redis.from_url(common.redis_url, password=password)
        ns = common.redis_namespace
        typer.echo(
            json.dumps(
                {
                    "schema": read_store_schema(client, ns),
                    "counters": read_counters(client, ns),
                    "watermarks": read_watermarks(client, ns, common.topic_events),
                    "topic_id": read_topic_id(client, ns, common.topic_events),
                    "gaps": [g.to_dict() for g in read_gaps(client, ns)[-20:]],
                },
                indent=2,
            )
        )

    app.add_typer(features, name="features")
