"""What a person watching a stage's flow run in the Prefect UI sees while it runs.

`stage_logs()`: the stage modules' own loggers (`stages.*`, `infra.*`, `freshrec.*`: publisher decisions,
exports, missed blocks, warnings) go into the flow run's logs at INFO, from every thread of the
run (the features worker's event loop, the trainer's helper threads), not only the flow's own.
`progress_artifact()`: a table artifact refreshed every few seconds with the pipeline's counters
(samples stored, windows, AUC, table size, versions), so a long-running run shows its progress
before it returns.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from stages.common.settings import CommonSettings

STAGE_LOGGERS = ("stages", "infra", "freshrec")


class _StampRun(logging.Filter):
    """Names the flow run on records from threads that do not carry Prefect's run context."""

    def __init__(self, flow_run_id: str) -> None:
        super().__init__()
        self.flow_run_id = flow_run_id

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "flow_run_id", None):
            record.flow_run_id = self.flow_run_id
        return True


@contextmanager
def stage_logs(level: int = logging.INFO) -> Iterator[None]:
    """Send the stage loggers' records at `level` and above to the current flow run's logs."""
    from prefect.logging.handlers import APILogHandler
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    if not run_id:  # not inside a flow run: nothing to attach to
        yield
        return
    handler = APILogHandler()
    handler.setLevel(level)
    handler.addFilter(_StampRun(str(run_id)))
    handler.setFormatter(logging.Formatter("%(message)s"))
    loggers = [logging.getLogger(name) for name in STAGE_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > level:
            logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(old)


def _progress_rows(common: CommonSettings) -> list[dict[str, Any]]:
    from flows import monitor

    look = monitor.look(common)
    counters = look.store_counters
    rows = {
        "samples stored": counters.get("samples_out"),
        "features dead letters": counters.get("dead_letters"),
        "duplicates skipped": counters.get("duplicates_skipped"),
        "windows trained": look.windows,
        "progressive AUC (last window)": (
            None if look.progressive_auc is None else round(look.progressive_auc, 4)
        ),
        "embedding table size": look.table_size,
        "versions registered": look.versions,
        "latest / production": f"{look.latest_version} / {look.production_version}",
    }
    return [{"what": k, "value": "-" if v is None else str(v)} for k, v in rows.items()]


@contextmanager
def progress_artifact(common: CommonSettings, key: str, every_s: float = 15.0) -> Iterator[None]:
    """Refresh the table artifact `key` every `every_s` seconds while the block runs (and once
    at its end). Probes never fail the run: a service that does not answer shows as "-"."""
    from prefect.artifacts import create_table_artifact

    stop = threading.Event()
    log = logging.getLogger(__name__)

    def publish() -> None:
        try:
            create_table_artifact(key=key, table=_progress_rows(common),
                                  description="Pipeline progress, refreshed while the run goes on")
        except Exception as exc:  # progress is a courtesy: never the reason a run fails
            log.debug("progress artifact %s not updated: %s", key, exc)

    def loop() -> None:
        while not stop.wait(every_s):
            publish()

    # Prefect's run context is a context variable: the thread runs in a copy of it, so the
    # artifact links to this flow run.
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(loop,), name=f"{key}-progress",
                              daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
        publish()
