"""Replay a Criteo-format file through the trainer: one pass, in order.

Rows are validated like the ingest stage does (`criteo.VALID_ROW`, reasons from `row_error`);
an invalid row is skipped and counted, not an error. Each valid row's event time is its 1-based
line number (the file has no clock), so a replay is deterministic. The position is the number
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

from stages.common.criteo import VALID_ROW, parse_valid_rows, row_error
from stages.common.errors import TrainError
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
    """Chunks of `chunk_rows` lines of a Criteo file, after skipping `skip_lines` lines."""

    def __init__(self, path: Path, skip_lines: int = 0, chunk_rows: int = 4096) -> None:
        self.path = path.resolve()
        self.exhausted = False
        self.invalid_rows = 0
        self._lines = skip_lines
        self._chunk_rows = chunk_rows
        self._handle = _open(self.path)
        self._iter: Iterator[bytes] = iter(self._handle)
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
        valid: list[bytes] = []
        numbers: list[int] = []
        for line in self._iter:
            self._lines += 1
            if VALID_ROW.match(line.rstrip(b"\n")):
                valid.append(line)
                numbers.append(self._lines)
            else:
                reason = row_error(line)
                if reason is None:  # VALID_ROW is stricter on trailing bytes than row_error
                    valid.append(line)
                    numbers.append(self._lines)
                else:
                    self.invalid_rows += 1
                    log.debug("replay line %d skipped: %s", self._lines, reason)
            if self._lines - first + 1 >= self._chunk_rows:
                break
        else:
            self.exhausted = True
        if self._lines < first:
            return None
        samples = to_samples(parse_valid_rows(valid), np.asarray(numbers, dtype=np.int64))
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
