"""The feature transform, raw columns -> model inputs. Training and serving both call this.

Dense: `sign(x) * log1p(|x|)`, a missing value becomes 0.0. Stateless on purpose: the trainer
and every serving replica compute exactly the same inputs without sharing running statistics
(those are kept for monitoring, see the features stage). Categorical: `hashing.feature_ids`.
Admission (an id seen too rarely is replaced by its field's fallback id) is NOT applied here: the
trainer's embedding table decides it, and serving follows the table (an id absent from the
exported table uses the fallback row), so both sides take the same decision.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from stages.common.criteo import RawBatch
from stages.common.hashing import feature_ids
from stages.common.samples import SampleBatch

TRANSFORM_VERSION = 1


def dense_transform(dense: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """float64[n, 13] with NaN for missing -> float32[n, 13]."""
    out = np.sign(dense) * np.log1p(np.abs(dense))
    return np.nan_to_num(out, nan=0.0).astype(np.float32)


def to_samples(batch: RawBatch, event_time_ms: npt.NDArray[np.int64]) -> SampleBatch:
    """The model inputs of raw rows, in order; `event_time_ms` is int64[n]."""
    return SampleBatch(
        label=batch.label.astype(np.uint8),
        dense=dense_transform(batch.dense),
        ids=feature_ids(batch.cats, batch.cat_missing),
        event_time_ms=np.asarray(event_time_ms, dtype=np.int64),
    )
