"""The pure core of the features stage: micro-batches -> per-partition samples, statistics,
the event-id check (`dedupe`).

Imports no Kafka, Redis or Faust client (an import-linter contract checks it).
"""

from stages.features.core.batch import (
    DeadLetter,
    OffsetGap,
    PartitionBatch,
    RecordBatch,
    SplitResult,
    split_batch,
    warm_up,
)
from stages.features.core.dedupe import (
    DedupeConfig,
    EventIdColumns,
    IdWindow,
    PartitionIds,
    Verdict,
    dedupe_batch,
    parse_event_ids,
)
from stages.features.core.stats import FieldStats, hll_estimate, hll_registers

__all__ = [
    "DeadLetter",
    "DedupeConfig",
    "EventIdColumns",
    "IdWindow",
    "PartitionIds",
    "Verdict",
    "dedupe_batch",
    "parse_event_ids",
    "FieldStats",
    "OffsetGap",
    "PartitionBatch",
    "RecordBatch",
    "SplitResult",
    "hll_estimate",
    "hll_registers",
    "split_batch",
    "warm_up",
]
