"""The publisher loop: trainer exports (MLflow runs) -> registry versions, aliases, the gate.

Each cycle downloads the trainer exports not folded yet (in order), folds them
(`core.merge.fold`) and, when anything was folded, registers ONE version: full or the delta
since the previous version, as `plan.next_kind` alone decides (the first version and every
`FRESHREC_PUBLISH_FULL_EVERY`-th are full; how the trainer exported plays no part). `latest`
moves to it (MLflow reserves that alias: it resolves to the newest version); `production` moves
when the quality gate passes. On start the publisher rebuilds what it holds from the registry
(the last version's chain), so a restart continues the chain.

After each registration (put off while announced exports wait, see below, at most
`RETAIN_DEFER_MAX` registrations) and once at start the retention policy (`core.retention`,
`FRESHREC_PUBLISH_KEEP_VERSIONS`) deletes the versions that neither the newest N, production,
rollback nor a kept delta's chain needs, with their artifacts, and the trainer exports already
folded into a registered version beyond the newest `FRESHREC_PUBLISH_KEEP_TRAINER_EXPORTS`.

A publisher stopped between creating a version and deciding its gate (SIGKILL, MLflow away)
never registers that publish_seq again: a restart, or the next cycle, finds the version by its
`freshrec.publish_seq` tag, adopts it (decides its gate, moves `production`) and continues from
it. `FRESHREC_PUBLISH_TEST_PAUSE_AFTER_REGISTER_S` (tests only) makes the publisher sleep right
after creating a version, so a test can kill it there.

Wake-up hints (`wakeup.py`, `FRESHREC_PUBLISH_NOTIFY`): the loop waits at most `interval_s`
between cycles, and less when the trainer announces an export on Redis pub/sub; after creating
a version and after moving `production` it announces that to serving the same way. The hints
only shorten waits: without Redis the loop polls as before.

Lineage: the registered model's description says what it is (`plan.model_description`); each
version is created with a description of its tags and gets its gate decision added once the
gate is decided (`plan.version_description`, written before the `freshrec.gate` tag). With
`FRESHREC_PUBLISH_METRICS_PORT` the loop serves Prometheus metrics (`prom_publisher.py`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from stages.common.errors import ContractError, FreshrecError
from stages.common.export_meta import ExportMeta
from stages.common.model_export import ModelExport, non_finite, write_export
from stages.common.settings import CommonSettings
from stages.publish.core import plan
from stages.publish.core.merge import ChainGap, FoldState, fold, registered, renumber
from stages.publish.core.plan import VersionInfo
from stages.publish.core.retention import retention_plan
from stages.publish.loaded import sorted_full
from stages.publish.registry import Registry, manifest_sha256
from stages.publish.settings import PublishSettings
from stages.publish.wakeup import publisher_hints

log = logging.getLogger(__name__)
TEST_PAUSE_ENV = "FRESHREC_PUBLISH_TEST_PAUSE_AFTER_REGISTER_S"  # tests only, see above
RETAIN_DEFER_MAX = 10  # registrations retention may be put off while exports wait


@dataclass
class PublishSummary:
    """What a `run_publisher` call did: versions registered and promoted (in order), exports
    folded, gate refusals, trainer exports refused (NaN/inf weights), cycles that failed
    (logged), the newest version, and what retention deleted: registry versions (with their
    artifacts), trainer exports, and retention rounds that failed (logged, retried after the
    next registration)."""

    versions: list[int] = field(default_factory=list)
    version_kinds: list[str] = field(default_factory=list)  # full/delta, one per `versions`
    promoted: list[int] = field(default_factory=list)
    exports_folded: int = 0
    gate_refusals: int = 0
    refused_exports: int = 0
    failed_cycles: int = 0
    last_version: int | None = None
    versions_deleted: int = 0
    exports_deleted: int = 0
    retention_failures: int = 0


class Publisher:
    """Holds the fold state between cycles; `cycle()` does one poll-fold-register round."""

    def __init__(
        self, registry: Registry, settings: PublishSettings, work: Path,
        hint: Callable[[str], object] | None = None,
        behind: Callable[[], bool] | None = None,
    ) -> None:
        self.registry = registry
        self.hint = hint  # tells serving "a version was created / production moved"
        self.behind = behind  # True when a trainer export is announced and not folded yet
        self._unretained = 0  # registrations since the last retention round
        self.settings = settings
        self.work = work
        self.state = FoldState()
        self.last: VersionInfo | None = None
        self._cursor: dict[str, int] = {}
        self._first_seq = 0
        # what the metrics report (read from another thread at scrape time)
        self.production: int | None = None
        self.last_published_s: float | None = None  # unix time of the last version's publish
        self._described: tuple[str | None] | None = None  # model type in the model description
        self._started = self._folded = 0.0  # monotonic: this cycle's start, its fold's end

    def describe_model(self, model_type: str | None) -> None:
        """Create the registered model when absent and keep its description current (written
        when it differs, e.g. a new model type)."""
        if self._described == (model_type,):
            return
        self.registry.ensure_model(plan.model_description(
            self.registry.name, model_type, self.settings.full_every,
            self.registry.common.schema().field_names()))
        self._described = (model_type,)

    def restore(self, summary: PublishSummary | None = None) -> None:
        """Rebuild the materialized model of the last registered version (if any), deciding
        its gate first when a stopped publisher left it undecided."""
        self.registry.ensure_model()
        self.last = self.registry.latest_version()
        self._cursor.clear()
        self.production = self.registry.alias_version("production")
        if self.last is None:
            self.state = FoldState()
            self.describe_model(None)
            return
        tags = self.registry.version_tags(self.last.version)
        published = tags.get(plan.T_PUBLISHED_MS)
        self.last_published_s = int(published) / 1000 if published else None
        if plan.T_GATE not in tags:
            log.warning("v%d (publish_seq %d) has no gate decision (its publisher stopped "
                        "after creating it): adopting it", self.last.version, self.last.publish_seq)
            self._gate(self.last, tags, summary or PublishSummary())
        model = self.registry.materialize(self.last.version, self.work)
        self.describe_model(model.spec.model_type)
        current = renumber(model, self.last.export_seq, None)
        self.state = registered(
            FoldState(current=current, run_id=self.last.run_id, trainer_seq=self.last.export_seq)
        )
        self._cursor[self.last.run_id] = self.last.export_seq + 1
        log.info("publisher resumes after v%d (trainer %s/%d)",
                 self.last.version, self.last.run_id, self.last.export_seq)

    def cycle(self, summary: PublishSummary) -> int | None:
        """Fold new trainer exports and register a version when any was folded."""
        self._started = time.monotonic()
        head = self.registry.trainer_head(self.settings.trainer_run_id)
        if head is None:
            return None
        run_id, newest = head
        for seq in range(self._cursor.get(run_id, 1), newest + 1):
            try:
                export = self.registry.trainer_export(run_id, seq, self.work)
                ExportMeta.parse(export.meta)
            except ContractError as exc:  # retried next cycle; what was folded is published
                log.error("trainer export %s/%d refused: %s", run_id, seq, exc)
                summary.failed_cycles += 1
                break
            diverged = non_finite(export)
            if diverged is not None:  # never published; its successors wait for a full export
                log.error("trainer export %s/%d refused, not published: %s", run_id, seq, diverged)
                summary.refused_exports += 1
                self._cursor[run_id] = seq + 1
                continue
            if not self.state.pending:
                self._first_seq = seq
            try:
                self.state = fold(self.state, export, run_id)
                summary.exports_folded += 1
            except ChainGap as exc:
                log.warning("skipping trainer export %s/%d: %s", run_id, seq, exc)
            self._cursor[run_id] = seq + 1
        if not self.state.pending:
            return None
        self._folded = time.monotonic()
        version = self._register(summary)
        self._unretained += 1
        # while exports wait, retention (a few MLflow calls) waits for a quieter cycle, but
        # never more than RETAIN_DEFER_MAX registrations
        if self.behind is None or not self.behind() or self._unretained >= RETAIN_DEFER_MAX:
            self.retain(summary)
        return version

    def retain(self, summary: PublishSummary) -> None:
        """Apply the retention policy (`core.retention`): delete the registry versions it
        lets go (newest first, each with its artifacts; the production history trimmed first,
        so rollback never targets a deleted version), then the trainer exports already folded
        into a registered version beyond the newest `keep_trainer_exports`. A failure is
        logged and counted; the next registration tries again."""
        self._unretained = 0
        try:
            self._retain_versions(summary)
            self._retain_exports(summary)
        except FreshrecError as exc:
            summary.retention_failures += 1
            log.error("retention failed (retried after the next registration): %s", exc)

    def _retain_versions(self, summary: PublishSummary) -> None:
        keep_last = self.settings.keep_versions
        if keep_last == 0:
            return
        self.production = self.registry.alias_version("production")
        decision = retention_plan(
            self.registry.freshrec_versions(), keep_last,
            self.production, self.registry.production_history(),
        )
        if decision.history is not None:
            self.registry.set_production_history(decision.history)
        for version in decision.delete:
            self.registry.delete_version(version)
            summary.versions_deleted += 1
        if decision.delete:
            log.info("retention: deleted %d versions (v%d..v%d) with their artifacts; %d kept",
                     len(decision.delete), min(decision.delete), max(decision.delete),
                     len(decision.keep))

    def _retain_exports(self, summary: PublishSummary) -> None:
        keep, last = self.settings.keep_trainer_exports, self.last
        if keep == 0 or last is None:
            return
        seqs = self.registry.trainer_export_seqs(last.run_id)
        # only exports at or below the last registered one: the pending ones are still needed
        doomed = [s for s in seqs[:-keep] if s <= last.export_seq]
        for seq in doomed:
            self.registry.delete_trainer_export(last.run_id, seq)
            summary.exports_deleted += 1
        if doomed:
            log.info("retention: deleted trainer exports %s/%d..%d (folded into v%d)",
                     last.run_id, doomed[0], doomed[-1], last.version)

    def _register(self, summary: PublishSummary) -> int:
        state, last = self.state, self.last
        if state.current is None or state.run_id is None or state.trainer_seq is None:
            raise ContractError("nothing to register")
        kind = plan.next_kind(last, state.needs_full, self.settings.full_every)
        seq = last.publish_seq + 1 if last else 1
        meta = ExportMeta.parse(state.current.meta).spanning(
            ExportMeta.parse(state.first_meta or state.current.meta)
        )
        export: ModelExport
        delta = state.delta if kind == "delta" else None
        if delta is not None and last is not None:
            export = renumber(delta, seq, last.publish_seq)
            base, pos = last.version, last.chain_pos + 1
        else:
            kind = "full"
            export = renumber(sorted_full(state.current), seq, None)
            base, pos = None, 0
        export = replace(export, meta=meta.to_dict())
        self.describe_model(export.spec.model_type)
        existing = self.registry.find_version(seq)
        if existing is not None:  # created by a cycle that failed before its gate: adopt it
            version, tags = existing
            log.warning("publish_seq %d is v%d already (created before a failure): adopting "
                        "it; exports folded since are folded again", seq, version)
            self._gate(plan.parse_version(version, tags), tags, summary)
            self.restore(summary)
            summary.versions.append(version)
            summary.version_kinds.append(tags.get(plan.T_KIND, kind))
            summary.last_version = version
            return version
        with tempfile.TemporaryDirectory(dir=self.work) as tmp:
            directory = write_export(export, Path(tmp) / "export")
            tags = plan.version_tags(
                kind=kind, publish_seq=seq, base_version=base, chain_pos=pos,
                run_id=state.run_id, export_seq_first=self._first_seq, export_seq=state.trainer_seq,
                meta=meta,
                manifest_sha256=manifest_sha256(directory),
                published_at_ms=int(time.time() * 1000),
            )
            version = self.registry.register(directory, tags,
                                             plan.version_description(tags, None))
        if self.hint is not None:
            self.hint(f"v{version} created")
        _test_pause(version)
        # `latest` needs no move: MLflow reserves that alias name, and Registry.alias_version
        # resolves it to the newest version.
        info = plan.parse_version(version, tags)
        passed, reason = self._gate(info, tags, summary)
        log.info("registered v%d (%s, seq %d, trainer %s/%d); production %s: %s; %.2f s "
                 "(read and fold %.2f s)", version, kind, seq, state.run_id, state.trainer_seq,
                 "moved" if passed else "stays", reason, *self._took())
        self.state = registered(state)
        self.last = info
        self.last_published_s = int(tags[plan.T_PUBLISHED_MS]) / 1000
        summary.versions.append(version)
        summary.version_kinds.append(kind)
        summary.last_version = version
        return version


    def _gate(
        self, info: VersionInfo, tags: dict[str, str], summary: PublishSummary
    ) -> tuple[bool, str]:
        """Decide the quality gate of `info` and move `production` when it passes, then tag the
        decision (`freshrec.gate`), so that a version without the tag is one whose gate a stopped
        publisher may not have finished (promoting again is harmless). A decision already
        tagged is kept as it is (production may have been rolled back since)."""
        gate = tags.get(plan.T_GATE)
        if gate is not None:
            return gate.startswith("passed"), gate
        prod = self.registry.alias_version("production")
        self.production = prod
        decision = plan.quality_gate(
            info.progressive_auc, self.registry.version_info(prod) if prod else None,
            self.settings.gate_tolerance,
        )
        if decision.passed:
            self.registry.promote(info.version)
            self.production = info.version
            summary.promoted.append(info.version)
            if self.hint is not None:
                self.hint(f"v{info.version} production")
        else:
            summary.gate_refusals += 1
        # the description before the tag: a version whose gate tag is missing gets both again
        self.registry.describe_version(info.version, plan.version_description(tags, decision))
        self.registry.tag_version(info.version, plan.T_GATE, plan.gate_text(decision))
        return decision.passed, decision.reason


    def _took(self) -> tuple[float, float]:
        """Seconds since this cycle started, and of its reading and folding."""
        return time.monotonic() - self._started, self._folded - self._started


def _test_pause(version: int) -> None:
    """Tests only: sleep after creating a version, so a test can SIGKILL the publisher here."""
    pause = float(os.environ.get(TEST_PAUSE_ENV, "0") or 0)
    if pause > 0:
        log.warning("created v%d; pausing %.1f s (%s, tests only)", version, pause, TEST_PAUSE_ENV)
        time.sleep(pause)


def run_publisher(
    common: CommonSettings,
    settings: PublishSettings,
    *,
    once: bool = False,
    interval_s: float | None = None,
    stop: threading.Event | None = None,
) -> PublishSummary:
    """Publish until `stop` is set (or one cycle when `once`); returns what was done.

    With `once`, any error propagates (FreshrecError). Otherwise a failed cycle (MLflow down, a
    corrupt trainer export) is logged, counted and retried after `interval_s` (default:
    `settings.interval_s`). With `settings.notify` a trainer's export hint ends the wait early,
    and each version created or promoted is announced to serving (see `wakeup.py`).
    """
    work = Path(settings.work_dir) if settings.work_dir else common.state_dir / "publish"
    work.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    interval = settings.interval_s if interval_s is None else interval_s
    summary = PublishSummary()
    registry = Registry(common)
    notifier, wakeup = publisher_hints(common, registry.name, not once) if settings.notify \
        else (None, None)
    publisher = Publisher(registry, settings, work, notifier.notify if notifier else None,
                          wakeup.pending if wakeup else None)
    restored = False
    metrics = None
    if not once and settings.metrics_port is not None:
        from stages.publish.prom_publisher import PublisherMetrics

        metrics = PublisherMetrics(summary, publisher)
        metrics.serve(settings.metrics_port)
        log.info("publisher metrics at http://127.0.0.1:%d/metrics", settings.metrics_port)
    try:
        while True:
            try:
                if not restored:
                    publisher.restore(summary)
                    restored = True
                    publisher.retain(summary)  # a registry left by an older build or setting
                publisher.cycle(summary)
            except FreshrecError as exc:
                if once:
                    raise
                summary.failed_cycles += 1
                log.error("publish cycle failed (retrying in %.1f s): %s", interval, exc)
            if not once and wakeup is not None:
                wakeup.wait(interval, stop)
            if once or stop.wait(0 if wakeup is not None else interval):
                return summary
    finally:
        if metrics is not None:
            metrics.close()
        for hints in (wakeup, notifier):
            if hints is not None:
                hints.close()
        try:
            registry.close()
        except FreshrecError as exc:
            log.warning("%s", exc)
