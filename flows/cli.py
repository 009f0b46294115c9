"""The `freshrec` console command.

Each stage (and `infra`) owns a small `cli.py` with `register(app)`, which adds its commands; the
modules import nothing heavy at import time, so `freshrec ingest` never loads TensorFlow.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer

from stages.common.errors import FreshrecError

_COMMAND_MODULES = (
    "infra.cli",
    "stages.ingest.cli",
    "stages.features.cli",
    "stages.train.cli",
    "stages.publish.cli",
    "flows.commands",
    "flows.settings_cmd",
)


def create_app() -> typer.Typer:
    """Build the typer application with every stage's commands registered."""
    app = typer.Typer(
        name="freshrec",
        help="Online learning for CTR models: ingest -> features -> train -> publish.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


def main() -> None:
    """Console entrypoint: a FreshrecError becomes one line on stderr and exit status 2."""
    logging.basicConfig(
        level=os.environ.get("FRESHREC_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One line per HTTP request drowns the useful lines.
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        from flows.settings_cmd import unknown_variables

        for variable in unknown_variables():
            logging.getLogger("freshrec").warning(
                "%s is set but no setting reads it (a typo?); `freshrec settings` lists them all",
                variable,
            )
        create_app()()
    except FreshrecError as exc:
        print(f"freshrec: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
