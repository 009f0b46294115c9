"""Lineage of the trainer's MLflow run: the source commit and package version, the shared
settings as params, the run's description, and each export's input as an MLflow dataset
(`ExportInput`: the store's namespace, block seqs and stream ids, or the replay file, its sha256
and rows). Pure values and formatting; `tracking.TrainerTracking` sends them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.common.settings import CommonSettings
from stages.train.settings import TrainSettings

log = logging.getLogger(__name__)


def package_version() -> str:
    """The installed freshrec distribution's version ("unknown" when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("freshrec")
    except PackageNotFoundError:
        return "unknown"


def source_commit() -> str:
    """`git rev-parse HEAD` of the checkout this code runs from, when it is one (and git
    answers within seconds); else the installed package version."""
    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        try:
            done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                                  capture_output=True, text=True, timeout=5, check=False)
            commit = done.stdout.strip()
            if done.returncode == 0 and len(commit) == 40:
                return commit
        except (OSError, subprocess.TimeoutExpired):
            pass  # no git on PATH, or it hangs: fall back to the package version
    return package_version()


def common_params(common: CommonSettings) -> dict[str, Any]:
    """The shared settings that say what a trainer run is about (none of them secret)."""
    return {
        "topic_events": common.topic_events,
        "redis_namespace": common.redis_namespace,
        "model_name": common.model_name,
        "mlflow_experiment": common.mlflow_experiment,
        "feature_schema": common.schema().schema_id,
    }


class FileDigest:
    """The sha256 of a file, computed once, on first use (in the outbox's thread, so a large
    file never holds training). None, logged once, when the file cannot be read any more."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._value: str | None = None
        self._done = False
        self._lock = threading.Lock()

    def value(self) -> str | None:
        with self._lock:
            if not self._done:
                self._done = True
                sha = hashlib.sha256()
                try:
                    with self.path.open("rb") as handle:
                        while block := handle.read(1 << 20):
                            sha.update(block)
                    self._value = sha.hexdigest()
                except OSError as exc:
                    log.warning("no sha256 of the replay file in MLflow: %s", exc)
            return self._value


@dataclass(frozen=True)
class InputSource:
    """Where this run's samples come from: a store namespace, or a replay file."""

    namespace: str | None = None
    replay: FileDigest | None = None

    def describe(self) -> str:
        if self.replay is not None:
            return f"a replay of `{self.replay.path}`"
        return f"the Redis feature store, namespace `{self.namespace}`"


@dataclass(frozen=True)
class ExportInput:
    """The samples of one export's windows (since the previous export): windows
    `window_first..window_last`, `samples` rows; block seqs (store) or 1-based file rows
    (replay) `first..last`, inclusive; stream entry ids of the first and last block (store)."""

    export_seq: int
    window_first: int
    window_last: int
    samples: int
    first: int
    last: int
    first_stream_id: str | None = None
    last_stream_id: str | None = None


def dataset_fields(source: InputSource, item: ExportInput) -> dict[str, str]:
    """The MLflow Dataset fields (name, digest, source_type, source, profile) of `item`."""
    profile = {"export_seq": item.export_seq, "windows": [item.window_first, item.window_last],
               "samples": item.samples}
    if source.replay is not None:
        sha = source.replay.value()
        where: dict[str, Any] = {"uri": source.replay.path.as_uri(), "sha256": sha,
                                 "rows": [item.first, item.last]}
        name, source_type = source.replay.path.name, "local"
    else:
        where = {"namespace": source.namespace, "block_seq": [item.first, item.last],
                 "stream_id": [item.first_stream_id, item.last_stream_id]}
        name, source_type = f"redis:{source.namespace}", "redis"
    text = json.dumps(where, sort_keys=True)
    return {"name": name, "digest": hashlib.sha256(text.encode()).hexdigest()[:16],
            "source_type": source_type, "source": text, "profile": json.dumps(profile)}


def run_description(common: CommonSettings, settings: TrainSettings, source: InputSource) -> str:
    """The run's description (markdown): what the run is, its model and its source."""
    return (
        f"freshrec trainer `{settings.consumer_name}`: online training of a "
        f"{settings.model_type} CTR model on feature schema `{common.schema().schema_id}` "
        f"(embedding dim {settings.embedding_dim}, hidden units "
        f"{','.join(map(str, settings.hidden_units))}, {settings.optimizer} lr "
        f"{settings.learning_rate}) on windows of {settings.window_samples} samples from "
        f"{source.describe()} (events topic `{common.topic_events}`). An export every "
        f"{settings.export_every} windows under `exports/`, published by the publisher as "
        f"model `{common.model_name}`; window metrics by step = window; plots under `plots/`."
    )
