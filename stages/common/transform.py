"""Raw rows -> training samples, for any feature schema. Training and serving compute the same
model inputs: both use `layout.Transform` (the schema's dense transforms and id hashing).

Admission (an id seen too rarely is replaced by its slot's fallback id) is NOT applied here: the
trainer's embedding table decides it, and serving follows the table (an id absent from the
exported table uses the fallback row), so both sides take the same decision.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from stages.common.layout import Transform
from stages.common.raw import RawColumns
from stages.common.samples import SampleBatch

#: Bumped when the model inputs of a row change (recorded in exports, see model_export.py).
TRANSFORM_VERSION = 1


def to_samples(
    transform: Transform, raw: RawColumns, event_time_ms: npt.NDArray[np.int64]
) -> SampleBatch:
    """The samples of raw rows, in order: label, `transform.dense`, `transform.ids`;
    `event_time_ms` is int64[n] (ms since the epoch)."""
    return SampleBatch(
        label=raw.label.astype(np.uint8),
        dense=transform.dense(raw),
        ids=transform.ids(raw),
        event_time_ms=np.asarray(event_time_ms, dtype=np.int64),
    )

