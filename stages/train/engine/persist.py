"""Checkpoint files of a `TFEngine`: plain `.npy` arrays and one JSON per rank, no pickle.

Layout of a checkpoint directory written by N ranks:

    rank_<r>/state.json        step, world size, rank, last export sequence, the model spec
                               (with its feature schema hash: another schema's is refused)
    rank_<r>/table/<name>.npy  the shard's bookkeeping (`ShardTable.state`)
    rank_<r>/pool/<name>.npy   the shard's rows and optimizer slots
    rank_<r>/net/<name>.npy    dense weights, fallback rows and their optimizer slots, the
                               running statistics of standardised inputs (`var__norm__*`)
                               (replicated: every rank writes its identical copy)

`state.json` is written last: a rank directory without it is incomplete.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.common.errors import TrainError
from stages.common.model_export import ModelSpec
from stages.common.schema import SchemaError
from stages.train.engine.dist import check_same_world

if TYPE_CHECKING:
    from stages.train.engine.engine import TFEngine

STATE_VERSION = 1


def _write(folder: Path, arrays: dict[str, Any]) -> None:
    for name, value in arrays.items():
        path = folder / (name.replace("/", "__") + ".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.asarray(value), allow_pickle=False)


def _read(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise TrainError(f"checkpoint folder {folder} is missing: pick a complete checkpoint")
    return {
        p.name[: -len(".npy")].replace("__", "/"): np.load(p, allow_pickle=False)
        for p in sorted(folder.glob("*.npy"))
    }


def snapshot(engine: TFEngine) -> Callable[[Path], None]:
    """A copy of `engine`'s rank state, in memory, and the function that writes it into a
    checkpoint's engine directory (safe in another thread: it touches no engine state)."""
    # The table's arrays are NumPy arrays changed in place by training: copied. The pool's and
    # the network's come from TensorFlow variables: `.numpy()` reads a tensor that the next
    # update does not change (TF copies a variable's buffer before updating one still read).
    copies: dict[str, dict[str, Any]] = {
        "table": {name: np.array(value, copy=True)
                  for name, value in engine.table.state().items()},
        "pool": engine.pool.state(),
        "net": engine.net.state(),
    }
    state = json.dumps({
        "version": STATE_VERSION,
        "step": engine.step,
        "size": engine.size,
        "rank": engine.rank,
        "last_export_seq": engine.last_export_seq,
        "spec": engine.spec.to_dict(),
        "optimizer": engine.config.optimizer,
    }, indent=1, sort_keys=True)
    rank = engine.rank

    def write(directory: Path) -> None:
        folder = Path(directory) / f"rank_{rank}"
        folder.mkdir(parents=True, exist_ok=True)
        for part, arrays in copies.items():
            _write(folder / part, arrays)
        (folder / "state.json").write_text(state)

    return write


def save(engine: TFEngine, directory: Path) -> None:
    """Write `engine`'s rank directory under `directory`."""
    snapshot(engine)(directory)


def same_spec(saved: dict[str, Any], spec: ModelSpec) -> bool:
    """Whether a checkpoint's spec (its `to_dict`) is `spec`. A checkpoint written before
    schemas (no layout in its spec) is the Criteo layout, which a simple `spec` with the same
    network still is: its state restores unchanged."""
    current = json.loads(json.dumps(spec.to_dict()))  # tuples as the JSON file has them
    if saved == current:
        return True
    layout_keys = ("slot_tables", "groups", "standardize", "schema_hash")
    if any(key in saved for key in layout_keys) or not spec.simple:
        return False
    return saved == {k: v for k, v in current.items() if k not in layout_keys}


def restore(engine: TFEngine, directory: Path) -> None:
    """Load `engine`'s rank directory; TrainError when missing, partial or incompatible."""
    folder = Path(directory) / f"rank_{engine.rank}"
    try:
        state = json.loads((folder / "state.json").read_text())
    except FileNotFoundError:
        raise TrainError(
            f"{folder} has no state.json: the checkpoint is incomplete or from fewer ranks"
        ) from None
    if state.get("version") != STATE_VERSION:
        raise TrainError(f"checkpoint version {state.get('version')!r}, expected {STATE_VERSION}")
    check_same_world(int(state["size"]), engine.size)
    saved_schema = state["spec"].get("schema_hash", "")
    if saved_schema and saved_schema != engine.spec.schema_hash:
        raise SchemaError(
            f"checkpoint {folder} was trained on feature schema {saved_schema}, this trainer "
            f"runs {engine.spec.schema_hash or 'criteo'}: set FRESHREC_SCHEMA to the "
            "checkpoint's schema, or give this trainer another FRESHREC_CHECKPOINT_DIR"
        )
    if not same_spec(state["spec"], engine.spec) or state["optimizer"] != engine.config.optimizer:
        raise TrainError("checkpoint has another model spec or optimizer than the configuration")
    try:
        engine.table.load_state(_read(folder / "table"))
        engine.pool.load_state(_read(folder / "pool"))
        engine.net.load_state(_read(folder / "net"))
    except (KeyError, ValueError) as exc:
        raise TrainError(f"checkpoint {folder} does not fit this configuration: {exc}") from None
    engine.step = int(state["step"])
    engine.last_export_seq = state["last_export_seq"]
