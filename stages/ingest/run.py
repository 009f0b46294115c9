"""`run_ingest`: the ingest entrypoint (the CLI and the Prefect flow both call it)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

from stages.common.errors import ConfigError
from stages.common.schema import FeatureSchema
from stages.common.settings import CommonSettings
from stages.ingest.core.pacing import IngestSummary, Tally, TokenBucket, summarize
from stages.ingest.core.prepare import PreparedBatch
from stages.ingest.core.synthetic import SyntheticConfig
from stages.ingest.kafka import CountingProducer, ensure_topics
from stages.ingest.pipeline import Prefetch, prepared_parts
from stages.ingest.resend import Resender
from stages.ingest.resume import FileResume
from stages.ingest.settings import IngestSettings
from stages.ingest.sources import (
    SourceBatch,
    check_generator_layout,
    check_loop,
    file_batches,
    stream_batches,
    synthetic_batches,
    synthetic_source,
)

Source = str | Path | BinaryIO | SyntheticConfig


def _batches(
    source: Source,
    schema: FeatureSchema,
    common: CommonSettings,
    settings: IngestSettings,
    loop: bool,
    limit: int | None,
    from_start: bool,
) -> tuple[Iterator[SourceBatch], FileResume | None]:
    """The source's batches and, for a file read once, its saved position."""
    if isinstance(source, (str, Path)) and str(source) not in ("-", "synthetic") and not loop:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"--source {source}: no such file (use a path, '-' or 'synthetic')")
        resume = FileResume.open(path, common, settings, from_start=from_start)
        chunk, max_line = settings.chunk_bytes, settings.max_line_bytes
        return resume.batches(chunk_bytes=chunk, max_line=max_line), resume
    return _unpositioned(source, schema, settings, loop, limit), None


def _unpositioned(
    source: Source, schema: FeatureSchema, settings: IngestSettings, loop: bool, limit: int | None
) -> Iterator[SourceBatch]:
    check_loop(source, loop)
    chunk, max_line = settings.chunk_bytes, settings.max_line_bytes
    if isinstance(source, SyntheticConfig):
        check_generator_layout(schema)
        return synthetic_batches(source, settings.synthetic_start, limit)
    if source == "synthetic":
        return synthetic_source(schema, settings, limit)
    if source == "-":
        return stream_batches(sys.stdin.buffer, chunk_bytes=chunk, max_line=max_line)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"--source {source}: no such file (use a path, '-' or 'synthetic')")
        return file_batches(path, chunk_bytes=chunk, max_line=max_line, loop=loop)
    name = str(getattr(source, "name", "-"))
    return stream_batches(source, chunk_bytes=chunk, max_line=max_line, name=name)


class _Progress:
    """Prints a progress line to `out` every `interval` seconds."""

    def __init__(self, out: TextIO | None, interval: float, start: float) -> None:
        self._out, self._interval = out, interval
        self._start = self._last = start
        self._last_read = 0

    def maybe(self, tally: Tally, now: float) -> None:
        if self._out is None or now - self._last < self._interval:
            return
        rate = (tally.read - self._last_read) / (now - self._last)
        self._last, self._last_read = now, tally.read
        print(
            f"ingest: {rate:,.0f} events/s | read {tally.read:,}, queued {tally.queued:,}, "
            f"dead-lettered {tally.dead:,} in {now - self._start:.0f} s",
            file=self._out,
            flush=True,
        )


def run_ingest(
    common: CommonSettings,
    settings: IngestSettings,
    source: Source,
    *,
    rate: float | None = None,
    limit: int | None = None,
    loop: bool = False,
    progress: bool = True,
    stop: threading.Event | None = None,
    from_start: bool = False,
) -> IngestSummary:
    """Read `source`, send its valid rows (by the feature schema `common.schema()`) to
    `common.topic_events` and the others, with their reasons, to `common.topic_events_dlq`; return when the source ends (or `limit` lines were
    read, or `stop` is set) and every record is acknowledged or counted as failed.

    source: a file path (plain or gzip), "-" (stdin), "synthetic" (the schema's generator,
    seeded by the settings), a `SyntheticConfig` (the Criteo-like generator), or a binary
    stream; rows in the schema's format (a header format: line 1 names the columns). rate: at most this many lines per
    second (token bucket). limit: read at most this many lines. loop: read a file again and
    again (with new event ids). progress: a line on stderr every `settings.progress_interval_s`.

    A file read once (not --loop) resumes: its acknowledged position is saved under
    `common.state_dir` while it is sent (see `resume`), and a later run with the same file
    starts after the last saved line (a finished file sends nothing); `from_start` ignores the
    saved position. A SIGKILL re-sends at most the lines after the last save (about
    `settings.position_interval_s` of them at full speed); `stop` (SIGTERM) loses and repeats
    nothing: reading stops, the queue is flushed (at most `settings.stop_flush_s`), and the
    position saved is what the broker acknowledged. The summary counts this run only.
    Raises ConfigError (bad arguments), ServiceUnavailable (no broker) or IngestError (the
    source cannot be read). Bad rows never raise: they are dead-lettered and counted.
    """
    if rate is not None and rate <= 0:
        raise ConfigError(f"--rate must be > 0, got {rate}")
    if limit is not None and limit < 0:
        raise ConfigError(f"--limit must be >= 0, got {limit}")
    schema = common.schema()
    batches, resume = _batches(source, schema, common, settings, loop, limit, from_start)
    resumed = resume.resumed_from_line if resume is not None else None
    if resume is not None and resume.finished:
        return summarize(Tally(), 0, 0, 0.0, False, resumed)
    if settings.create_topics:
        ensure_topics(common, [common.topic_events, common.topic_events_dlq])
    producer = CountingProducer(common, settings)
    resender = Resender(common, settings, producer).start()
    tally, started = Tally(), time.monotonic()
    reporter = _Progress(sys.stderr if progress else None, settings.progress_interval_s, started)
    bucket = TokenBucket(rate, max(1.0, rate / 10), started) if rate else None
    slice_lines = max(1, int(rate / 20)) if rate else 1 << 30
    stopped = read_all = False
    close_timeout: float | None = None  # the full delivery timeout when nothing went wrong
    try:
        with Prefetch(prepared_parts(batches, limit, slice_lines, schema)) as parts:
            for prepared in parts:
                if stop is not None and stop.is_set():
                    stopped = True
                    break
                if bucket is not None:
                    _sleep(bucket.wait(prepared.read, time.monotonic()), stop)
                if resume is not None:
                    resume.checkpoint(producer, stop, time.monotonic())
                _send(producer, common, prepared, tally)
                resender.sent(prepared.keys, prepared.values, time.monotonic())
                if resume is not None:
                    resume.handed(prepared)
                reporter.maybe(tally, time.monotonic())
            else:
                read_all = True
    except KeyboardInterrupt:  # a second Ctrl-C: give up (almost) at once
        close_timeout = 1.0
        raise
    except BaseException:  # e.g. Prefect's TerminationSignal on a cancel: flush, bounded
        close_timeout = settings.stop_flush_s
        raise
    finally:
        if stopped or (stop is not None and stop.is_set()):
            close_timeout = settings.stop_flush_s
        final = close_timeout is None  # not stopped, no error: look for a last reset
        if final:
            producer.wait_acked(stop, settings.delivery_timeout_s)
        resender.close(final_check=final)
        purged = producer.close(close_timeout)
        if resume is not None:
            resume.finish(producer, purged, read_all=read_all)
    failed_events = producer.failed(common.topic_events)
    failed_dead = producer.failed(common.topic_events_dlq)
    seconds = time.monotonic() - started
    return summarize(tally, failed_events, failed_dead, seconds, stopped, resumed,
                     resender.topic_resets, resender.resent)


def _sleep(seconds: float, stop: threading.Event | None) -> None:
    if seconds <= 0:
        return
    if stop is not None:
        stop.wait(seconds)
    else:
        time.sleep(seconds)


def _send(
    producer: CountingProducer, common: CommonSettings, prepared: PreparedBatch, tally: Tally
) -> None:
    producer.send(common.topic_events, prepared.keys, prepared.values)
    if prepared.dead:
        keys = [d.key() for d in prepared.dead]
        producer.send(common.topic_events_dlq, keys, [d.value() for d in prepared.dead])
        tally.by_reason.update(d.kind for d in prepared.dead)
    tally.read += prepared.read - prepared.headers
    tally.queued += len(prepared.values)
    tally.dead += len(prepared.dead)
    producer.poll()
