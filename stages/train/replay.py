"""Replay a file of rows in the feature schema's format through the trainer: one pass, in order.

Rows are parsed and validated like the ingest stage does (the schema's row parser); an invalid
row is skipped and counted, not an error. The model inputs are the schema's
(`layout.Transform`). A valid row's event time is the schema's event-time field, or, without
one, its 1-based line number (a file has no clock), so a replay is deterministic. The position is the number
of lines consumed, so a replay killed and restarted with the same checkpoint directory resumes
after the last checkpointed window.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from stages.common.errors import TrainError
from stages.common.layout import Transform, compile_layout
from stages.common.rows import RowParser, read_header
from stages.common.schema import FeatureSchema, load_schema
from stages.common.transform import to_samples
from stages.train.sources import Chunk

log = logging.getLogger(__name__)


def _open(path: Path) -> IO[bytes]:
    try:
        with path.open("rb") as probe:
            gz = probe.read(2) == b"\x1f\x8b"
        return cast(IO[bytes], gzip.open(path, "rb")) if gz else path.open("rb")
    except OSError as exc:
        raise TrainError(f"cannot read replay file {path}: {exc}") from None


class ReplaySource:
    """Chunks of `chunk_rows` lines of a file in `schema`'s format (default: the Criteo
    preset), after skipping `skip_lines` lines."""

    def __init__(
        self,
        path: Path,
        skip_lines: int = 0,
        chunk_rows: int = 4096,
        schema: FeatureSchema | None = None,
        embedding_dim: int = 16,
    ) -> None:
        schema = schema or load_schema("criteo")
        self._transform = Transform(schema, compile_layout(schema, embedding_dim))
        self.path = path.resolve()
        self.exhausted = False
        self.invalid_rows = 0
        self._lines = skip_lines
        self._chunk_rows = chunk_rows
        self._handle = _open(self.path)
        self._iter: Iterator[bytes] = iter(self._handle)
        header = None
        if schema.format.header:  # the first line names the columns (and counts as a line)
            first = next(self._iter, b"")
            header = read_header(schema, first, str(self.path))
            skip_lines = max(skip_lines, 1)
            self._lines = skip_lines
            skip_lines -= 1
        self._parser = RowParser.for_schema(schema, header)
        for _ in range(skip_lines):
            if next(self._iter, None) is None:
                self.exhausted = True
                break

    def close(self) -> None:
        self._handle.close()

    def poll(self, timeout_s: float) -> list[Chunk]:
        """The next chunk (one), or none at the end of the file (then `exhausted` is set)."""
        chunk = self._next()
        return [] if chunk is None else [chunk]

    def _next(self) -> Chunk | None:
        if self.exhausted:
            return None
        first = self._lines + 1
        lines: list[bytes] = []
        for line in self._iter:
            lines.append(line[:-1] if line.endswith(b"\n") else line)
            if len(lines) >= self._chunk_rows:
                break
        else:
            self.exhausted = True
        self._lines += len(lines)
        if not lines:
            return None
        parsed = self._parser.parse(lines)
        for index, reason in parsed.bad:
            log.debug("replay line %d skipped: %s", first + index, reason)
        self.invalid_rows += len(parsed.bad)
        numbers = first + parsed.good_index
        times = np.where(parsed.event_time_ms >= 0, parsed.event_time_ms, numbers)
        samples = to_samples(self._transform, parsed.raw, times.astype(np.int64))
        return Chunk(samples, first, self._lines, str(self._lines))

    def fetch_until(self, token: str) -> list[Chunk]:
        """The chunk rank 0 got: a replay is deterministic, so read the same lines."""
        chunks = self.poll(0.0)
        if not chunks or chunks[-1].token != token:
            raise TrainError(f"replay ranks disagree at line {token}: is the file changing?")
        return chunks

    def checkpoint_fields(self, chunk: Chunk) -> dict[str, Any]:
        """The TrainerState fields after `chunk` was trained."""
        return {"replay_file": str(self.path), "replay_rows": chunk.last_seq}
