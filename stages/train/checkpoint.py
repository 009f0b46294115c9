"""Atomic trainer checkpoints: the engine's state plus where the trainer was.

Layout under the checkpoint directory (`FRESHREC_CHECKPOINT_DIR`):

    ckpt-<window:010d>/state.json    TrainerState (below) as a `stages.common.trainer_state.
                                     CheckpointState` record, written last
    ckpt-<window:010d>/checksums.json  size and sha256 of every other file, checked at restore
    ckpt-<window:010d>/engine/       whatever `Engine.save` wrote (every rank its shard)
    .tmp-<window:010d>/              a checkpoint being written; removed at start if left over
    trainer_run.json                 the trainer's MLflow run id, written when the run is made
    .lock                            held (flock) by the one trainer using the directory

A checkpoint is written into `.tmp-*`, every file and directory fsynced, then renamed: a
directory named `ckpt-*` is always complete. The newest `keep` checkpoints are kept. A restore
takes the newest one whose files match their checksums and falls back past damaged ones.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from stages.common.errors import ContractError, TrainError
from stages.common.schema import FeatureSchema, SchemaError, load_schema
from stages.common.trainer_state import CheckpointState, StorePointer
from stages.train.core.positions import StorePosition

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
ENGINE_DIR = "engine"
RUN_FILE = "trainer_run.json"
CHECKSUM_FILE = "checksums.json"
LOCK_FILE = ".lock"
_PREFIX = "ckpt-"
_TMP = ".tmp-"


@dataclass(frozen=True)
class TrainerState:
    """Where the trainer was after window `window`.

    samples: samples trained so far (all ranks); store: the store position after the last
    trained window; replay_file/replay_rows: the replay in progress (absolute path) and its rows
    trained so far; export_seq: the last export sequence number written; last_full_seq: the
    last full export; run_id: the trainer's MLflow run; world_size: Horovod ranks that saved;
    missed_blocks: blocks found trimmed before they were read, over the trainer's life;
    feature_schema: the schema trained on, "<name>@<hash>" (None: before schemas, Criteo's).
    """

    window: int = 0
    samples: int = 0
    store: StorePosition = field(default_factory=StorePosition)
    replay_file: str | None = None
    replay_rows: int = 0
    export_seq: int = 0
    last_full_seq: int = 0
    run_id: str | None = None
    world_size: int = 1
    missed_blocks: int = 0
    feature_schema: str | None = None

    def record(self) -> CheckpointState:
        """The state.json record (the contract `freshrec evaluate` reads too)."""
        return CheckpointState(
            window=self.window,
            samples=self.samples,
            store=StorePointer(
                stream_id=self.store.stream_id, seq=self.store.seq, epoch=self.store.epoch
            ),
            replay_file=self.replay_file,
            replay_rows=self.replay_rows,
            export_seq=self.export_seq,
            last_full_seq=self.last_full_seq,
            run_id=self.run_id,
            world_size=self.world_size,
            missed_blocks=self.missed_blocks,
            feature_schema=self.feature_schema,
        )

    def to_json(self) -> str:
        return self.record().to_json()

    @staticmethod
    def from_json(text: str) -> TrainerState:
        """The state of a state.json; ContractError when it breaks `CheckpointState`."""
        record = CheckpointState.parse(text)
        fields = record.model_dump(exclude={"schema_version", "store"})
        return TrainerState(
            store=StorePosition(record.store.stream_id, record.store.seq, record.store.epoch),
            **fields
        )


def check_schema(path: Path, state: TrainerState, schema: FeatureSchema) -> None:
    """SchemaError naming both schemas unless checkpoint `path` was trained on `schema` (one
    written before schemas was trained on the Criteo preset): a trainer never silently starts
    over, nor reads a model of other inputs."""
    saved = state.feature_schema or load_schema("criteo").schema_id
    if saved.rpartition("@")[2] != schema.schema_hash:
        raise SchemaError(
            f"checkpoint {path} was trained on feature schema {saved}, this trainer runs "
            f"{schema.schema_id}: set FRESHREC_SCHEMA to the checkpoint's schema, or give this "
            "trainer another FRESHREC_CHECKPOINT_DIR to start a new model"
        )


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_checksums(root: Path, paths: list[Path]) -> dict[str, dict[str, object]]:
    """relative path (to `root`) -> {size, sha256} of each of `paths`."""
    out: dict[str, dict[str, object]] = {}
    for path in paths:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        out[path.relative_to(root).as_posix()] = {"size": path.stat().st_size,
                                                  "sha256": digest.hexdigest()}
    return out


def _checksums(root: Path) -> dict[str, dict[str, object]]:
    """relative path -> {size, sha256} of every file under `root` (but the checksum and state
    files themselves)."""
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    return file_checksums(root, [
        p for p in paths if p.relative_to(root).as_posix() not in (CHECKSUM_FILE, STATE_FILE)
    ])


def verify_checkpoint(path: Path) -> str | None:
    """What is wrong with checkpoint `path` (a file missing, of another size or content than
    its checksum file says), or None. A checkpoint written before checksums existed passes."""
    listed_path = path / CHECKSUM_FILE
    if not listed_path.is_file():
        return None
    try:
        listed = json.loads(listed_path.read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable {CHECKSUM_FILE}: {exc}"
    found = _checksums(path)
    for rel, expected in listed.items():
        got = found.get(rel)
        if got is None:
            return f"{rel} is missing"
        if got != expected:
            return f"{rel} does not match its checksum (size {got['size']}, expected {expected['size']})"
    return None


class Checkpoints:
    """The checkpoint directory of one trainer."""

    def __init__(self, root: Path, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError("keep at least one checkpoint")
        self.root = root
        self.keep = keep
        self._lock: IO[str] | None = None

    def _complete(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = [
            p for p in self.root.iterdir()
            if p.name.startswith(_PREFIX) and (p / STATE_FILE).is_file()
        ]
        return sorted(found, key=lambda p: p.name)

    def latest(self) -> tuple[Path, TrainerState] | None:
        """The newest complete checkpoint whose files match their checksums, and its state;
        None when there is none. A damaged one (a truncated or altered file, an unreadable
        state) is skipped with a WARNING naming the problem, falling back to the one before;
        TrainError when every checkpoint is damaged."""
        complete = self._complete()
        problems = []
        for path in reversed(complete):
            problem = verify_checkpoint(path)
            if problem is None:
                try:
                    return path, TrainerState.from_json((path / STATE_FILE).read_text())
                except (OSError, ContractError) as exc:
                    problem = f"unreadable state: {exc}"
            problems.append(f"{path.name}: {problem}")
            log.warning("checkpoint %s is damaged (%s): falling back to the one before", path,
                        problem)
        if problems:
            raise TrainError(
                f"every checkpoint in {self.root} is damaged ({'; '.join(problems)}): move them "
                "away to start afresh"
            )
        return None

    def lock(self) -> None:
        """Claim the directory for this trainer (rank 0; held until `unlock` or exit).
        TrainError when another trainer holds it: two trainers would overwrite each other."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise TrainError(
                f"another trainer (pid {holder}) uses the checkpoint directory {self.root}: "
                "stop it, or give this one its own FRESHREC_CHECKPOINT_DIR"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle

    def unlock(self) -> None:
        """Release the claim of `lock` (idempotent)."""
        handle = getattr(self, "_lock", None)
        if handle is not None:
            handle.close()
            self._lock = None

    def clean_stale(self) -> None:
        """Remove checkpoints left half-written by a killed trainer (rank 0, at start)."""
        if self.root.is_dir():
            for p in self.root.iterdir():
                if p.name.startswith(_TMP):
                    shutil.rmtree(p)

    def begin(self, window: int) -> Path:
        """A fresh, empty temporary directory for the checkpoint of `window` (rank 0 calls
        it; every rank then saves into `tmp / ENGINE_DIR`)."""
        tmp = self.staging(window)
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / ENGINE_DIR).mkdir(parents=True)
        return tmp

    def staging(self, window: int) -> Path:
        """The temporary directory of `window`'s checkpoint (the same path on every rank)."""
        return self.root / f"{_TMP}{window:010d}"

    def commit(self, tmp: Path, state: TrainerState,
               checksums: dict[str, dict[str, object]] | None = None) -> Path:
        """Write the checksums and the state, fsync everything, rename into place, drop old
        checkpoints. `checksums`: of the files under `tmp`, when the writers hashed them
        (`checkpoint_writer`); computed here otherwise."""
        listed = _checksums(tmp) if checksums is None else checksums
        (tmp / CHECKSUM_FILE).write_text(json.dumps(listed, indent=1, sort_keys=True))
        (tmp / STATE_FILE).write_text(state.to_json())
        _fsync_tree(tmp)
        final = self.root / f"{_PREFIX}{state.window:010d}"
        if final.exists():  # the same window checkpointed again after a restart
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(self.root)
        for old in self._complete()[: -self.keep]:
            shutil.rmtree(old)
        return final

    def read_run_id(self) -> str | None:
        """The trainer's MLflow run id, if one was made for this checkpoint directory."""
        path = self.root / RUN_FILE
        if not path.is_file():
            return None
        value = json.loads(path.read_text()).get("run_id")
        return str(value) if value else None

    def write_run_id(self, run_id: str) -> None:
        """Remember the MLflow run id (atomically, fsynced)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{RUN_FILE}.tmp"
        tmp.write_text(json.dumps({"run_id": run_id}))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.root / RUN_FILE)
        _fsync_dir(self.root)
