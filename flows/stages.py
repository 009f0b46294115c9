"""One Prefect flow per stage. Each wraps the stage's Python entrypoint and holds no logic.

Retries: features, train and publish are safe to restart (exactly-once watermarks in Redis, the
trainer resumes from its checkpoint, the publisher registers only exports it has not registered),
so they retry; ingest does not, because a retry would send a file's rows again.
Long-running stages take `duration_s` (None = until cancelled): the flow sets the stage's stop
event when it has passed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import Flow, flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from flows.observe import progress_artifact, stage_logs
from stages.common.settings import CommonSettings, load_settings, without_credentials


def _run_name(stage: str) -> Callable[[], str]:
    """Readable flow-run names: `<stage>-<detail>-<UTC date and time>` (train: the model type)."""

    def name() -> str:
        detail = ""
        if stage == "train":
            from stages.train.settings import TrainSettings

            detail = load_settings(TrainSettings).model_type.replace("_", "") + "-"
        return f"{stage}-{detail}{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"

    return name


@contextmanager
def _stop_after(duration_s: float | None) -> Iterator[threading.Event]:
    stop = threading.Event()
    timer = threading.Timer(duration_s, stop.set) if duration_s else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        yield stop
    finally:
        if timer:
            timer.cancel()


def _as_dict(summary: object) -> dict[str, Any]:
    if is_dataclass(summary) and not isinstance(summary, type):
        return asdict(summary)
    return dict(vars(summary)) if hasattr(summary, "__dict__") else {"result": summary}


def _summary_artifact(key: str, title: str, summary: dict[str, Any]) -> None:
    rows = [{"what": k, "value": str(v)} for k, v in summary.items() if not isinstance(v, list)]
    create_table_artifact(key=key, table=rows, description=title)


_WINDOW_METRICS = ("samples", "auc", "logloss", "ne", "calibration", "samples_per_second",
                   "table_size")


def _window_table(common: CommonSettings, run_id: str) -> tuple[list[dict[str, Any]], str]:
    """(one row per window from the run's MLflow metric history (last 200), the run's URL)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=common.mlflow_tracking_uri)
    rows: dict[int, dict[str, Any]] = {}
    for name in _WINDOW_METRICS:
        for metric in client.get_metric_history(run_id, name):
            rows.setdefault(metric.step, {})[name] = round(metric.value, 5)
    experiment_id = client.get_run(run_id).info.experiment_id
    ui = without_credentials(common.mlflow_tracking_uri)
    url = f"{ui}/#/experiments/{experiment_id}/runs/{run_id}"
    return [{"window": step, **rows[step]} for step in sorted(rows)][-200:], url


@flow(name="freshrec-ingest", retries=0, log_prints=True, persist_result=True,
      flow_run_name=_run_name("ingest"))
def ingest_flow(
    source: str = "synthetic",
    rate: float | None = None,
    limit: int | None = None,
    loop: bool = False,
    duration_s: float | None = None,
    from_start: bool = False,
) -> dict[str, Any]:
    """Stream events from a file, `-` or `synthetic` into Kafka (see `freshrec ingest`).

    Args:
        source: A file in the format of FRESHREC_SCHEMA on the worker host (plain or .gz),
            `-` for stdin, or `synthetic` for the schema's drifting synthetic click stream.
        rate: Events per second to send at most; empty: as fast as the broker takes them.
        limit: Stop after this many events; empty: the whole file (or, for synthetic, forever).
        loop: Start the file again at its end (a file source only).
        duration_s: Stop after this many seconds; empty: no time limit.
        from_start: Send a file from its first line even though an earlier run acknowledged
            part of it (by default a file resumes after its last acknowledged line).
    """
    from stages.ingest.run import run_ingest
    from stages.ingest.settings import IngestSettings

    common = load_settings(CommonSettings)
    with stage_logs(), _stop_after(duration_s) as stop:
        summary = run_ingest(
            common,
            load_settings(IngestSettings),
            source if source in ("-", "synthetic") else Path(source),
            rate=rate,
            limit=limit,
            loop=loop,
            progress=False,
            stop=stop,
            from_start=from_start,
        )
    result = _as_dict(summary)
    get_run_logger().info("ingest finished: %s", result)
    _summary_artifact("ingest-summary", f"Ingest of {source}", result)
    return result


@flow(name="freshrec-features", retries=3, retry_delay_seconds=10, log_prints=True,
      flow_run_name=_run_name("features"))
def features_flow(
    duration_s: float | None = None, max_idle_s: float | None = None
) -> dict[str, Any]:
    """Run the Faust features worker: events topic -> Redis feature store, exactly once.

    Args:
        duration_s: Stop after this many seconds; empty: run until cancelled.
        max_idle_s: Stop once no event came for this many seconds; empty: never idle out.
    """
    from stages.features.runner import run_features
    from stages.features.settings import FeaturesSettings

    common = load_settings(CommonSettings)
    with stage_logs(), progress_artifact(common, "features-progress"), \
            _stop_after(duration_s) as stop:
        summary = run_features(
            common,
            load_settings(FeaturesSettings),
            stop=stop,
            max_idle_s=max_idle_s,
        )
    result = _as_dict(summary)
    get_run_logger().info("features worker stopped: %s", result)
    _summary_artifact("features-summary", "Features worker", result)
    return result


@flow(name="freshrec-train", retries=3, retry_delay_seconds=10, log_prints=True,
      flow_run_name=_run_name("train"))
def train_flow(
    replay: str | None = None,
    max_windows: int | None = None,
    duration_s: float | None = None,
    ranks: int = 1,
) -> dict[str, Any]:
    """Run the resident trainer (or one replay pass over a file); metrics per window as a table.

    Args:
        replay: A file in the format of FRESHREC_SCHEMA on the worker host: train one pass
            over it, then stop.
            Empty: train on the feature store until stopped.
        max_windows: Stop after this many windows; empty: no limit.
        duration_s: Stop after this many seconds; empty: run until cancelled.
        ranks: Horovod processes on the worker host (`horovodrun -np RANKS --gloo`); 1 runs
            in the flow's own process. Checkpoints resume only with the same number of ranks.
    """
    from stages.train.settings import TrainSettings

    common = load_settings(CommonSettings)
    with stage_logs(), progress_artifact(common, "train-progress"), \
            _stop_after(duration_s) as stop:
        if ranks > 1:
            from flows.horovod import run_ranks

            result = run_ranks(ranks, replay, max_windows, stop)
        else:
            from stages.train.tf_quiet import import_tensorflow

            import_tensorflow()
            from stages.train.loop import run_trainer

            result = _as_dict(run_trainer(
                common,
                load_settings(TrainSettings),
                replay=Path(replay) if replay else None,
                max_windows=max_windows,
                stop=stop,
            ))
    result.pop("last_report", None)
    run_id = result.get("run_id")
    if run_id:
        table, run_url = _window_table(common, run_id)
        if table:
            create_table_artifact(
                key="train-progressive-metrics",
                table=table,
                description="Progressive validation per window (scored before training on it).",
            )
        create_link_artifact(key="train-mlflow-run", link=run_url, link_text="MLflow run")
        ui = without_credentials(common.mlflow_tracking_uri)
        plots = [f"![{name}]({ui}/get-artifact?path=plots/{name}.png&run_uuid={run_id})"
                 for name in ("progressive_metrics", "table_size")]
        create_markdown_artifact(
            key="train-plots",
            markdown="## Progressive metrics and table size\n\n" + "\n\n".join(plots)
            + f"\n\n[All of the run's artifacts]({run_url}/artifacts)",
            description="The trainer's plots, stored with its MLflow run",
        )
    _summary_artifact("train-summary", "Trainer", result)
    return result


@flow(name="freshrec-publish", retries=3, retry_delay_seconds=10, log_prints=True,
      flow_run_name=_run_name("publish"))
def publish_flow(
    once: bool = True, interval_s: float | None = None, duration_s: float | None = None
) -> dict[str, Any]:
    """Register the trainer's new exports as model versions; move `latest`/`production`.

    Args:
        once: One publish cycle, then return (the scheduled deployment); false: keep polling.
        interval_s: Seconds between cycles when not `once`; empty: FRESHREC_PUBLISH_INTERVAL_S.
        duration_s: Stop after this many seconds when not `once`; empty: until cancelled.
    """
    from stages.publish.run import PublishSettings, run_publisher

    common = load_settings(CommonSettings)
    with stage_logs(), _stop_after(duration_s) as stop:
        summary = run_publisher(
            common, load_settings(PublishSettings), once=once, interval_s=interval_s, stop=stop
        )
    result = _as_dict(summary)
    versions = result.get("versions") or []
    if versions:
        ui = without_credentials(common.mlflow_tracking_uri)
        base = f"{ui}/#/models/{common.model_name}/versions"
        lines = [f"- [version {v}]({base}/{v})" for v in versions]
        create_markdown_artifact(
            key="publish-versions",
            markdown=f"## Registered versions of `{common.model_name}`\n" + "\n".join(lines)
            + f"\n\n[Model registry]({ui}/#/models/{common.model_name})",
        )
    _summary_artifact("publish-summary", "Publisher", result)
    return result


FLOWS: dict[str, Flow[..., dict[str, Any]]] = {
    "ingest": ingest_flow,
    "features": features_flow,
    "train": train_flow,
    "publish": publish_flow,
}
