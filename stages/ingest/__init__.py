"""The ingest stage: raw rows -> validated events in Kafka, bad rows -> the dead-letter topic.

Entrypoints: `stages.ingest.run.run_ingest(common, settings, source, ...)` (Python, also what
the Prefect flow wraps) and `freshrec ingest --source PATH|-|synthetic` (`cli.py`).

Layout (pure core + thin adapters, see HOUSE_STYLE):
- `core/`: no I/O. `lines` (byte stream -> numbered lines), `validate` (validation by the
  feature schema's row parser, `stages.common.rows`, with a columnar fast path and `rowcheck`
  for the Criteo layout; reasons; the dead-letter record format), `prepare` (one batch ->
  event records + dead letters), `pacing` (token bucket, counters, `IngestSummary`),
  `synthetic` (+ `randomness`, `rowformat`: the deterministic Criteo-shaped generator).
- adapters: `sources` (files, gzip, stdin, the schema's generator; source tags), `kafka`
  (topic creation, the counting producer), `pipeline` (preparing ahead in threads, header
  lines), `run`, `cli`, `settings` (`FRESHREC_INGEST_*`).

Records: events follow `stages.common.events` (key = event id); dead letters follow
`core.validate` (key = the event id the row would have had, JSON value with the raw line).
"""
