"""The pure core of the features stage: micro-batches -> per-partition samples, statistics,
the event-id check (`dedupe`), all for the feature schema of a `SchemaCodec`.

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
from stages.features.core.codec import SchemaCodec, default_codec
from stages.features.core.dedupe import (
    DedupeConfig,
    EventIdColumns,
    IdWindow,
    PartitionIds,
    Verdict,
    dedupe_batch,
    parse_event_ids,
)
from stages.features.core.stats import (
    FieldStats,
    MultiSlots,
    StatsFields,
    hll_estimate,
    hll_registers,
)

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
    "MultiSlots",
    "SchemaCodec",
    "StatsFields",
    "default_codec",
    "OffsetGap",
    "PartitionBatch",
    "RecordBatch",
    "SplitResult",
    "hll_estimate",
    "hll_registers",
    "split_batch",
    "warm_up",
]
