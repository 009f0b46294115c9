"""Preparing batches ahead of the producer, in other threads.

A reader thread cuts the source into parts and hands each to a small pool of workers that
validate and encode it (pyarrow kernels, which release the GIL), while the main thread hands
earlier parts to librdkafka. Parts come out in source order.

A header format (`format.header: true`): line 1 of every pass over a source is its header; it
names the columns of the lines after it (`rows.read_header`) and is counted as read, but is
neither an event nor a dead letter. A file read from a resumed position gets it as `file_head`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from types import TracebackType

import numpy as np
import numpy.typing as npt

from stages.common.errors import IngestError
from stages.common.rows import read_header
from stages.common.schema import FeatureSchema
from stages.ingest.core.lines import LineBatch
from stages.ingest.core.pacing import head, split, tail
from stages.ingest.core.position import SeekPoint
from stages.ingest.core.prepare import PreparedBatch, SourcePosition, prepare_batch
from stages.ingest.core.validate import RowValidator
from stages.ingest.sources import SourceBatch

_DONE = object()


@dataclass(frozen=True)
class _Failure:
    error: BaseException


Job = Callable[[], PreparedBatch]


class Validators:
    """The row validator of a schema, and of each header line seen (a header format)."""

    def __init__(self, schema: FeatureSchema) -> None:
        self.schema = schema
        self.by_header: dict[bytes, RowValidator] = {}
        self.plain = None if schema.format.header else RowValidator.for_schema(schema)

    def for_header(self, line: bytes, source: str) -> RowValidator:
        """The validator of rows under header `line`; SchemaError when it lacks a field."""
        found = self.by_header.get(line)
        if found is None:
            names = read_header(self.schema, line, source)
            found = self.by_header[line] = RowValidator.for_schema(self.schema, names)
        return found


def prepared_parts(
    batches: Iterable[SourceBatch], limit: int | None, part_lines: int, schema: FeatureSchema
) -> Iterator[Job]:
    """The source's batches, cut to at most `limit` lines in all and `part_lines` per part, as
    jobs that prepare (validate by `schema` and encode) one part each, in order. The last part
    of a source batch with a known end byte carries it as its `seek` point."""
    validators = Validators(schema)
    current = validators.plain
    read = 0
    for item in batches:
        lines = item.lines if limit is None else head(item.lines, limit - read)
        parts = split(lines, part_lines)
        end = None
        if item.end_byte is not None and lines is item.lines:
            end = SeekPoint(lines.first_line + len(lines) - 1, item.end_byte)
        for index, part in enumerate(parts):
            times = item.event_time_ms
            if isinstance(times, np.ndarray):
                first = part.first_line - item.lines.first_line
                times = times[first : first + len(part)]
            seek = end if index == len(parts) - 1 else None
            headers = 0
            if validators.plain is None:
                if part.first_line == 1 and len(part):
                    current = validators.for_header(part.line(0), item.position.source)
                    part, headers = tail(part, 1), 1
                    times = times[1:] if isinstance(times, np.ndarray) else times
                elif current is None:
                    if item.file_head is None:
                        raise IngestError(f"{item.position.source}: the schema's format has a "
                                          "header line, but the source gave none")
                    current = validators.for_header(item.file_head, item.position.source)
            if current is None:  # a header source without lines (cannot happen)
                continue
            yield partial(_prepare, part, item.position, times, seek, current, headers)
            read += len(part) + headers
        if limit is not None and read >= limit:
            return


def _prepare(
    part: LineBatch,
    position: SourcePosition,
    times: int | npt.NDArray[np.int64],
    seek: SeekPoint | None,
    validator: RowValidator,
    headers: int,
) -> PreparedBatch:
    prepared = prepare_batch(part, position, times, validator)
    if headers:
        prepared = replace(prepared, read=prepared.read + headers, headers=headers)
    return prepared if seek is None else replace(prepared, seek=seek)


class Prefetch:
    """Runs `jobs` on `workers` threads, at most `depth` jobs ahead of the consumer, and
    yields their results in order.

    The jobs are drawn from `jobs` in a daemon thread. An exception raised by `jobs` or by a
    job is re-raised by the consumer's next `next()`. `close` (or leaving the `with` block)
    stops the threads at their next step; a thread blocked in a read of stdin is left behind
    (it is a daemon) rather than waited for.
    """

    def __init__(self, jobs: Iterable[Job], workers: int = 2, depth: int = 4) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest-prepare")
        self._thread = threading.Thread(
            target=self._run, args=(iter(jobs),), name="ingest-read", daemon=True
        )
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, jobs: Iterator[Job]) -> None:
        try:
            for job in jobs:
                if not self._put(self._pool.submit(job)):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(_Failure(exc))
            return
        self._put(_DONE)

    def __iter__(self) -> Iterator[PreparedBatch]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            if isinstance(item, Future):
                yield item.result()

    def close(self) -> None:
        """Stop the thread (idempotent)."""
        self._closed.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=2.0)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
