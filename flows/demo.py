"""`freshrec demo`: the whole pipeline on one machine, driven through Prefect deployments.

Brings up the embedded services, deploys the four stages to a process work pool, starts a
Prefect worker, triggers the stage runs (features, train, publish long-running for the demo's
duration; ingest of the feature schema's synthetic stream or a file), shows live progress, starts
serving from the registry once a version exists, queries it with rows of the schema
(`FRESHREC_SCHEMA`, default criteo), and ends with a summary and the UI addresses.
Ctrl-C cancels the runs and stops the worker and serving; the services stay up for the UIs
(`freshrec infra down` stops them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from rich.console import Console
from rich.live import Live
from rich.table import Table

from flows import demo_serving, monitor
from flows.deployments import DEFAULT_POOL, PROJECT_ROOT, deploy_all, deployment_name
from infra.services.logpipe import wrapped
from stages.common.settings import CommonSettings, without_credentials

# Small windows and frequent exports so that versions appear within a minute.
DEMO_ENV = {
    "FRESHREC_TRAIN_WINDOW_SAMPLES": "4096",
    "FRESHREC_TRAIN_WINDOW_SECONDS": "5",
    "FRESHREC_TRAIN_EXPORT_EVERY": "1",
    # At the demo's rate a window closes every ~2 s: a version from each (no 5-s floor) shows
    # freshness in seconds (bench/RESULTS-freshness.md).
    "FRESHREC_TRAIN_EXPORT_MIN_INTERVAL_S": "0",
    # A checkpoint writes the whole table (~230 MB at the default capacity) in the background;
    # every 15 windows (~30 s) a restart retrains at most that.
    "FRESHREC_TRAIN_CHECKPOINT_EVERY": "15",
    "FRESHREC_TRAIN_FULL_EXPORT_EVERY": "5",
    "FRESHREC_PUBLISH_FULL_EVERY": "5",
    "TF_USE_LEGACY_KERAS": "1",
    "PYTHONUNBUFFERED": "1",
}
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoOptions:
    """What the demo streams and for how long."""

    duration_s: float = 180.0
    source: str = "synthetic"
    rate: float = 2000.0
    pool: str = DEFAULT_POOL
    serve_port: int = 8765
    drain_s: float = 60.0


@dataclass
class DemoSummary:
    """What the demo did; `ok` when the counts add up and serving answered with the newest."""

    events_read: int = 0
    events_sent: int = 0
    ingest_dead_letters: int = 0
    samples_stored: int = 0
    feature_dead_letters: int = 0
    duplicates_dropped: int = 0  # re-sent events the features stage dropped by event id
    versions: int = 0
    latest_version: int | None = None
    served_version: int | None = None
    predictions: list[float] = field(default_factory=list)
    run_states: dict[str, str] = field(default_factory=dict)

    @property
    def counts_add_up(self) -> bool:
        return self.events_read == (
            self.samples_stored + self.ingest_dead_letters + self.feature_dead_letters
            + self.duplicates_dropped
        )

    @property
    def runs_completed(self) -> bool:
        return bool(self.run_states) and all(s == "COMPLETED" for s in self.run_states.values())

    @property
    def ok(self) -> bool:
        return (
            self.counts_add_up
            and self.versions >= 3
            and self.served_version is not None
            and self.served_version == self.latest_version
            and self.runs_completed
        )


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _worker_env(common: CommonSettings) -> dict[str, str]:
    env = {**DEMO_ENV, **os.environ, "PREFECT_API_URL": common.prefect_api_url}
    env["FRESHREC_STATE_DIR"] = str(common.state_dir.resolve())
    return env


def _start_worker(common: CommonSettings, pool: str, log_dir: Path) -> subprocess.Popen[bytes]:
    log_dir.mkdir(parents=True, exist_ok=True)
    prefect = Path(sys.executable).with_name("prefect")
    argv = [str(prefect), "worker", "start", "--pool", pool, "--type", "process", "--limit", "8"]
    return subprocess.Popen(  # the worker outlives no demo, but its log rotates all the same
        wrapped(argv, log_dir / "worker.log"),
        cwd=PROJECT_ROOT,
        env=_worker_env(common),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


async def _trigger(stage: str, parameters: dict[str, Any]) -> UUID:
    from prefect.deployments import run_deployment

    run = await run_deployment(  # type: ignore[misc]  # async_dispatch confuses mypy
        deployment_name(stage), parameters=parameters, timeout=0
    )
    run_id: UUID = run.id
    return run_id


async def _states(run_ids: dict[str, UUID]) -> dict[str, str]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        out = {}
        for stage, run_id in run_ids.items():
            run = await client.read_flow_run(run_id)
            out[stage] = run.state.type.value if run.state else "UNKNOWN"
        return out


async def _cancel(run_ids: dict[str, UUID]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    async with get_client() as client:
        for run_id in run_ids.values():
            run = await client.read_flow_run(run_id)
            if run.state and run.state.type.value not in TERMINAL:
                await client.set_flow_run_state(run_id, Cancelling(), force=True)


def _table(progress: monitor.Progress, states: dict[str, str], elapsed: float) -> Table:
    table = Table(title=f"freshrec demo - {elapsed:,.0f} s", show_header=False)
    c = progress.store_counters
    show = lambda v: "-" if v is None else f"{v:,}"  # noqa: E731
    table.add_row("events in Kafka (broker offsets)", show(progress.events_in_topic))
    table.add_row("ingest dead letters", show(progress.ingest_dead_letters))
    table.add_row("samples stored", show(c.get("samples_out")))
    table.add_row("features dead letters", show(c.get("dead_letters")))
    table.add_row("windows trained", show(progress.windows))
    auc = progress.progressive_auc
    table.add_row("progressive AUC", "-" if auc is None else f"{auc:.4f}")
    table.add_row("embedding table size", show(progress.table_size))
    table.add_row("versions published", show(progress.versions))
    table.add_row("latest / production", f"{progress.latest_version} / {progress.production_version}")
    table.add_row("stage runs", "  ".join(f"{k}:{v}" for k, v in states.items()))
    return table


def _line(progress: monitor.Progress, states: dict[str, str], elapsed: float) -> str:
    """The progress as one log line (for logs and CI, where no live table is drawn)."""
    c = progress.store_counters
    auc = "-" if progress.progressive_auc is None else f"{progress.progressive_auc:.4f}"
    return (
        f"[{elapsed:5.0f} s] samples={c.get('samples_out', 0):,} windows={progress.windows} "
        f"auc={auc} table={progress.table_size} versions={progress.versions} "
        + " ".join(f"{k}={v}" for k, v in states.items())
    )


def run_demo(common: CommonSettings, options: DemoOptions, console: Console) -> DemoSummary:
    """Run the demo; see the module docstring. Returns its summary (also printed)."""
    from infra.services import up

    # SIGTERM (a supervisor, `kill`) stops the demo like Ctrl-C: runs cancelled, worker stopped.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    console.rule("[bold]freshrec demo")
    # The schema and the rows that query serving first: a bad FRESHREC_SCHEMA, or a synthetic
    # demo of a schema without a generator, stops here, before any service starts.
    schema = common.schema()
    probe = demo_serving.probe_rows(common, options.source)
    console.print(f"feature schema: {schema.schema_id}")
    console.print("starting the embedded services (Kafka protocol, Redis, MLflow, Prefect) ...")
    up(common)
    common = common.refreshed()  # the embedded Redis's password exists now
    os.environ["PREFECT_API_URL"] = common.prefect_api_url
    console.print(f"deploying the four stages to work pool [bold]{options.pool}[/] ...")
    deploy_all(options.pool, paused=True)
    log_dir = common.state_dir / "logs"
    worker = _start_worker(common, options.pool, log_dir)
    before = _counts(common)
    run_ids: dict[str, UUID] = {}
    server: subprocess.Popen[bytes] | None = None
    summary = DemoSummary()
    start = time.monotonic()
    try:
        d = options.duration_s
        run_ids["features"] = asyncio.run(_trigger("features", {"duration_s": d + options.drain_s}))
        run_ids["train"] = asyncio.run(_trigger("train", {"duration_s": d + options.drain_s}))
        run_ids["publish"] = asyncio.run(
            _trigger("publish", {"once": False, "interval_s": 5.0, "duration_s": d + options.drain_s})
        )
        run_ids["ingest"] = asyncio.run(
            _trigger("ingest", {"source": options.source, "rate": options.rate, "limit": None,
                                "duration_s": d, "from_start": True})
        )
        last_line = 0.0
        with Live(console=console, refresh_per_second=1, transient=not console.is_terminal) as live:
            while True:
                elapsed = time.monotonic() - start
                progress = monitor.look(common)
                states = asyncio.run(_states(run_ids))
                live.update(_table(progress, states, elapsed))
                if not console.is_terminal and elapsed - last_line >= 10:
                    console.print(_line(progress, states, elapsed))
                    last_line = elapsed
                if server is None and progress.latest_version:
                    server = demo_serving.start(common, options.serve_port, log_dir)
                if all(states.get(s) in TERMINAL for s in run_ids):
                    break
                time.sleep(2)
        summary = _summarise(
            common, before, asyncio.run(_states(run_ids)), run_ids.get("ingest")
        )
        if server is not None:
            summary.served_version, summary.predictions = demo_serving.query(
                options.serve_port, summary.latest_version, probe
            )
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: cancelling the stage runs ...")
        asyncio.run(_cancel(run_ids))
    finally:
        if server is not None:
            demo_serving.stop(server)
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
    _print_summary(console, common, summary)
    return summary


def _counts(common: CommonSettings) -> dict[str, int]:
    """Counters that only grow: topic sizes, the feature store's counters, and the newest
    registry version number (MLflow numbers versions 1, 2, ... and never reuses one, while
    retention deletes old ones, so the count of versions present is not what was added)."""
    _count, latest, _production = monitor.registry_state(common)
    return {
        **monitor.store_counters(common),
        "registry_versions": latest or 0,
        "topic_events": monitor.topic_size(common, common.topic_events) or 0,
        "topic_dlq": monitor.topic_size(common, common.topic_events_dlq) or 0,
    }


async def _ingest_counts(run_id: UUID) -> dict[str, int]:
    """The ingest run's own summary (its persisted flow result): read, sent, dead_lettered."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        run = await client.read_flow_run(run_id)
    if run.state is None:
        return {}
    result = await run.state.aresult(raise_on_failure=False)
    return dict(result) if isinstance(result, dict) else {}


def _summarise(
    common: CommonSettings,
    before: dict[str, int],
    states: dict[str, str],
    ingest_run: UUID | None,
) -> DemoSummary:
    """What this demo added (differences, so a second demo on the same services adds up too).

    Event counts come from the ingest run's summary; the broker's high watermarks are only a
    fallback (Tansu reports them with a lag).
    """
    after = _counts(common)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    _count, latest, _production = monitor.registry_state(common)
    sent, dlq = delta.get("topic_events", 0), delta.get("topic_dlq", 0)
    read = sent + dlq
    if ingest_run is not None:
        try:
            ingest = asyncio.run(_ingest_counts(ingest_run))
            read = ingest.get("read", read)
            sent = ingest.get("sent", sent)
            dlq = ingest.get("dead_lettered", dlq) + ingest.get("failed", 0)
        except Exception as exc:  # the summary still prints, from the broker's numbers
            log.warning("could not read the ingest run's result (%s); using broker offsets", exc)
    return DemoSummary(
        events_read=read,
        events_sent=sent,
        ingest_dead_letters=dlq,
        samples_stored=delta.get("samples_out", 0),
        feature_dead_letters=delta.get("dead_letters", 0),
        duplicates_dropped=delta.get("duplicates_dropped_by_id", 0),
        versions=delta.get("registry_versions", 0),
        latest_version=latest if delta.get("registry_versions", 0) > 0 else None,
        run_states=states,
    )


def _print_summary(console: Console, common: CommonSettings, s: DemoSummary) -> None:
    """The summary; each verdict is on a line of its own and never wrapped (CI reads them)."""
    say = lambda text: console.print(text, soft_wrap=True)  # noqa: E731
    verdict = lambda ok, yes, no: f"[green]{yes}" if ok else f"[red]{no}"  # noqa: E731
    console.rule("[bold]summary")
    say(
        f"events in: {s.events_read:,} = samples stored {s.samples_stored:,} + dead letters "
        f"{s.ingest_dead_letters + s.feature_dead_letters:,}"
        + (f" + re-sent duplicates dropped {s.duplicates_dropped:,}" if s.duplicates_dropped else "")
    )
    say("counts: " + verdict(s.counts_add_up, "adds up", "MISMATCH"))
    say(f"versions registered by this run: {s.versions} (latest: {s.latest_version})")
    say(f"serving answered with version {s.served_version}: {s.predictions[:5]}")
    say(f"stage runs: {s.run_states}")
    say("runs: " + verdict(s.runs_completed, "all COMPLETED", "NOT ALL COMPLETED"))
    say("demo: " + verdict(s.ok, "OK", "FAILED"))
    say(f"Prefect UI: {without_credentials(common.prefect_api_url).removesuffix('/api')}")
    say(f"MLflow UI:  {without_credentials(common.mlflow_tracking_uri)}")
    say("the services keep running for the UIs; stop them with: freshrec infra down")
