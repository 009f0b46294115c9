"""A test double of the Engine protocol: logistic regression in NumPy (one process only).

logit = bias + dense @ w_dense + sum over fields of w[id]; an id gets a weight when first
trained (no admission threshold), plain SGD. It records the event times of every row it trained,
in its saved state, so a test can check which samples the model state holds (exactly once).
Its exports are Wide&Deep models with zero deep weights, so `reference_model.predict` on an
export equals `predict`. Optional `train_delay` seconds per `train` call slow it down for
kill-and-restart tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stages.common.model_export import ModelExport
from stages.common.samples import SampleBatch
from stages.train.core.engine_protocol import EngineConfig, TrainResult


class NumpyLogisticEngine:
    rank = 0
    size = 1

    def __init__(self, config: EngineConfig, train_delay: float = 0.0) -> None:
        self.config = config
        self.train_delay = train_delay
        self.batch_sizes: list[int] = []  # the mini-batch of each train call
        self.ids = np.empty(0, np.uint64)
        self.w = np.empty(0, np.float64)
        self.w_dense = np.zeros(config.spec.n_dense, np.float64)
        self.bias = 0.0
        self.steps = 0
        self.trained_ts: list[npt.NDArray[np.int64]] = []
        self._changed = np.empty(0, np.uint64)
        self._last_export: int | None = None

    def _weights(self, ids: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:
        if len(self.ids) == 0:
            return np.zeros(ids.shape)
        pos = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return np.where(self.ids[pos] == ids, self.w[pos], 0.0)

    def _logit(self, batch: SampleBatch) -> npt.NDArray[np.float64]:
        dense = batch.dense.astype(np.float64)
        return self.bias + dense @ self.w_dense + self._weights(batch.ids).sum(axis=1)

    def predict(self, batch: SampleBatch) -> npt.NDArray[np.float64]:
        return 1.0 / (1.0 + np.exp(-self._logit(batch)))

    def train(self, batch: SampleBatch, batch_size: int | None = None) -> TrainResult:
        started = time.monotonic()
        size = batch_size or self.config.batch_size
        self.batch_sizes.append(size)
        if self.train_delay:
            time.sleep(self.train_delay)
        losses = []
        lr = self.config.learning_rate
        for lo in range(0, len(batch), size):
            mb = batch.take(slice(lo, lo + size))
            new = np.setdiff1d(np.unique(mb.ids), self.ids)
            if len(new):
                ids = np.concatenate([self.ids, new])
                order = np.argsort(ids)
                self.ids = ids[order]
                self.w = np.concatenate([self.w, np.zeros(len(new))])[order]
            p = self.predict(mb)
            y = mb.label.astype(np.float64)
            pc = np.clip(p, 1e-7, 1 - 1e-7)
            losses.append(-(y * np.log(pc) + (1 - y) * np.log(1 - pc)).sum())
            g = (p - y) / len(mb)
            self.bias -= lr * g.sum()
            self.w_dense -= lr * (mb.dense.astype(np.float64).T @ g)
            pos = np.searchsorted(self.ids, mb.ids)
            grad = np.zeros(len(self.ids))
            np.add.at(grad, pos, np.repeat(g[:, None], mb.ids.shape[1], axis=1))
            self.w -= lr * grad
            self._changed = np.union1d(self._changed, np.unique(mb.ids))
            self.steps += 1
        self.trained_ts.append(np.asarray(batch.event_time_ms, dtype=np.int64).copy())
        loss = float(sum(losses) / len(batch)) if len(batch) else float("nan")
        return TrainResult(
            samples=len(batch),
            steps=-(-len(batch) // self.config.batch_size),
            loss=loss,
            seconds=time.monotonic() - started,
            table_size=len(self.ids),
            evicted=0,
        )

    def table_size(self) -> int:
        return len(self.ids)

    def trained(self) -> npt.NDArray[np.int64]:
        """Event times of every row trained into the current state, in training order."""
        return np.concatenate(self.trained_ts) if self.trained_ts else np.empty(0, np.int64)

    def save(self, directory: Path) -> None:
        self.snapshot()(directory)

    def snapshot(self) -> Callable[[Path], None]:
        arrays = {"ids": self.ids.copy(), "w": self.w.copy(), "w_dense": self.w_dense.copy(),
                  "bias": np.array([self.bias]), "steps": np.array([self.steps]),
                  "trained": self.trained().copy()}

        def write(directory: Path) -> None:
            directory.mkdir(parents=True, exist_ok=True)
            np.savez(directory / "state.npz", **arrays)

        return write

    def restore(self, directory: Path) -> None:
        with np.load(directory / "state.npz") as data:
            self.ids, self.w, self.w_dense = data["ids"], data["w"], data["w_dense"]
            self.bias = float(data["bias"][0])
            self.steps = int(data["steps"][0])
            self.trained_ts = [data["trained"]]

    def export(self, export_seq: int, full: bool, meta: dict[str, Any]) -> ModelExport | None:
        spec = self.config.spec
        if spec.model_type != "wide_deep":
            raise NotImplementedError("the NumPy double exports Wide&Deep only")
        ids = self.ids if full else self._changed
        rows = np.zeros((len(ids), spec.row_width), np.float32)
        rows[:, -1] = self._weights(ids)
        dense: dict[str, npt.NDArray[np.float32]] = {}
        width = spec.deep_width
        for i, units in enumerate(spec.hidden_units):
            dense[f"deep/{i}/kernel"] = np.zeros((width, units), np.float32)
            dense[f"deep/{i}/bias"] = np.zeros(units, np.float32)
            width = units
        dense["head/kernel"] = np.zeros((width, 1), np.float32)
        dense["head/bias"] = np.zeros(1, np.float32)
        dense["wide/kernel"] = self.w_dense.astype(np.float32)[:, None]
        dense["wide/bias"] = np.array([self.bias], np.float32)
        base = None if full or self._last_export is None else self._last_export
        out = ModelExport(
            spec=spec, kind="full" if base is None else "delta", export_seq=export_seq,
            base_seq=base, dense=dense, ids=ids.copy(), rows=rows, meta=dict(meta),
        )
        self._last_export = export_seq
        self._changed = np.empty(0, np.uint64)
        return out
