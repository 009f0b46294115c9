"""`freshrec settings`: the effective configuration of every stage, secrets masked, and the
`FRESHREC_*` variables that no setting reads (a typo silently falls back to a default)."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from stages.common.settings import CommonSettings, load_settings, redact_url

# Variables read outside the settings classes (the CLI, the installer, the test suite).
OTHER_VARIABLES = frozenset({"FRESHREC_LOG_LEVEL", "FRESHREC_VENV", "FRESHREC_PYTHON"})


def settings_classes() -> dict[str, type[BaseSettings]]:
    """Section name -> settings class, the shared ones first."""
    from infra.services.redis_server import EmbeddedRedisSettings
    from stages.features.settings import FeaturesSettings
    from stages.ingest.settings import IngestSettings
    from stages.publish.settings import PublishSettings
    from stages.train.settings import TrainSettings

    return {"common": CommonSettings, "redis": EmbeddedRedisSettings, "ingest": IngestSettings,
            "features": FeaturesSettings, "train": TrainSettings, "publish": PublishSettings}


def _variables(cls: type[BaseSettings]) -> dict[str, str]:
    """Environment variable -> field name, for every field of `cls` (aliases included)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    out = {}
    for name, info in cls.model_fields.items():
        out[f"{prefix}{name}".upper()] = name
        alias = info.validation_alias
        for choice in getattr(alias, "choices", [alias] if isinstance(alias, str) else []):
            if isinstance(choice, str):
                out[choice.upper()] = name
    return out


def unknown_variables(environ: dict[str, str] | None = None) -> list[str]:
    """The `FRESHREC_*` variables in `environ` (default: this process's) that no setting reads."""
    environ = dict(os.environ) if environ is None else environ
    known = set(OTHER_VARIABLES)
    for cls in settings_classes().values():
        known |= set(_variables(cls))
    return sorted(v for v in environ if v.startswith("FRESHREC_") and v not in known)


def _shown(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "**********" if value.get_secret_value() else ""
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    if isinstance(value, (frozenset, set, tuple)):
        return sorted(value) if isinstance(value, (frozenset, set)) else list(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return str(value)


def effective(section: str, cls: type[BaseSettings]) -> list[dict[str, Any]]:
    """One row per setting: variable, value (secrets masked), where it came from."""
    settings = load_settings(cls)
    variables = {field: var for var, field in _variables(cls).items()}
    rows = []
    for name in cls.model_fields:
        rows.append({
            "section": section,
            "variable": variables[name],
            "value": _shown(getattr(settings, name)),
            "source": "set" if name in settings.model_fields_set else "default",
        })
    return rows


def settings_command(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per setting.")] = False,
    only_set: Annotated[bool, typer.Option("--set", help="Only the settings you set.")] = False,
) -> None:
    """Print the effective configuration (environment and .env), secrets masked."""
    rows = [row for section, cls in settings_classes().items() for row in effective(section, cls)]
    if only_set:
        rows = [r for r in rows if r["source"] == "set"]
    unknown = unknown_variables()
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, default=str))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="freshrec settings")
        for column in ("variable", "value", "source"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(row["variable"], json.dumps(row["value"], default=str), row["source"])
        Console().print(table)
    for variable in unknown:
        typer.echo(f"warning: {variable} is set but no setting reads it (a typo?)", err=True)


def register(app: typer.Typer) -> None:
    """Add `freshrec settings` to the application."""
    app.command("settings")(settings_command)
