"""The features stage: events topic -> training samples in the Redis feature store, exactly once.

One feature schema per worker and per store (FRESHREC_SCHEMA, `stages.common.schema`): events
are rows of that schema, decoded by its row parser (`stages.common.rows`), turned into samples by
its layout (`stages.common.layout.Transform`: dense inputs float32[n, D], id slots uint64[n, S]),
and stored in blocks that carry the schema's hash. The store keeps the hash it was claimed for
(`store_schema.py`); a worker of another schema stops at start-up with SchemaError, and readers
refuse blocks of another schema (`samples.decode_block`).

Layout (pure core + thin adapters, see HOUSE_STYLE):

- `core/`           pure: `SchemaCodec` (the schema's parser, transform and statistics fields),
                    `split_batch` (micro-batch of Kafka records -> per-partition
                    `PartitionBatch`: samples, dead letters, offset range, gaps),
                    `PartitionBatch.since` (drop rows already stored), `FieldStats` (statistics
                    per schema field), `dedupe_batch` (drop re-sent events by event id within a
                    bounded window).
- `store.py`        Redis: the atomic write script (watermark check + event-id state guard +
                    XADD + counters) and the statistics snapshots. Its docstring states the
                    exactly-once protocol.
- `store_schema.py` the schema a store holds (`samples:schema`), claimed at start-up.
- `topic_ids.py`    the events topic's incarnation (its Kafka topic id), asked after every fetch.
- `pipeline.py`     `FeaturesRuntime`: one worker's state; decode -> dead letters -> write
                    (Redis retried for `redis_retry_s`; store epoch changes counted).
- `batch_consumer.py`, `app.py`: the Faust app (`create_app(common, settings)`) and its two
                    consumers ("batch", the default, and "stream" = a Faust agent).
- `runner.py`       `run_features(common, settings, *, stop, max_idle_s) -> FeaturesSummary`.
- `faust_main.py`   lazy factory module for `faust -A stages.features.faust_main worker`.
- `readback.py`     synchronous read helpers (tests, `freshrec features status`).

Transform: the common `transform.to_samples` with the schema's `layout.Transform` (stateless
dense transforms, 64-bit splitmix64 feature ids incl. missing values), so training and serving
compute the same inputs.

Feature admission is decided in the TRAINER, not here: its embedding table counts each id and
admits it once seen a configurable number of times; before that the id trains and serves as its
slot's fallback id (`Layout.fallback_ids`). Serving follows the exported table (an id absent
from it uses the fallback row), so training and serving take the same decision from the same
table. This stage stores every id as is and keeps id statistics (HyperLogLog distinct counts per
categorical and multi field) for monitoring only.

Stored (keys.py, namespace = FRESHREC_REDIS_NAMESPACE): sample blocks in the `samples` stream
(one block per partition per micro-batch, `samples.encode_block`, seq numbers 1, 2, 3, ...
without holes unless trimmed by retention), `offsets:<topic>` watermarks, `offsets:<topic>:ids:<partition>` (the event-id windows,
`store.event_ids_key`), `samples:schema` (the store's schema hash), `counters`
(events_in = samples_out + dead_letters + duplicates_dropped_by_id, totals and per
`<topic>:<partition>`; duplicates_skipped (offset replays); dedupe_unchecked; gaps), `gaps` (`stages.common.gaps` records), `stats` + `stats:version`
(stats.py: one value per schema field).

Re-sent events (ingest resumed after a crash, `--from-start`, a producer retry: the same event
id `<tag>:<seq>` at a new offset) are dropped when their seq is within FRESHREC_FEATURES_
DEDUPE_WINDOW of the newest seq of their source in their partition, and counted as
duplicates_dropped_by_id; older ones are stored unchecked and counted as dedupe_unchecked
(`core/dedupe.py` states the contract and the memory bound).

Bad events go to the dead-letter topic (FRESHREC_FEATURES_DLQ_TOPIC, created by `run_features`
with the FRESHREC_TOPIC_RETENTION_* settings when absent; a
`stages.common.dead_letter.DeadLetterRecord`: reason, topic position, the raw value in base64),
at least once, before the Redis write that
consumes their offsets; they advance the watermark like samples and count as dead_letters.
"""
