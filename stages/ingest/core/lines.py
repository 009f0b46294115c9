"""Cutting a byte stream into numbered lines, in large chunks, with a bound on line length.

`LineSplitter` is fed raw chunks of any size (it keeps the unfinished last line between calls,
never the chunk itself: the caller may read the next chunk into the same bytearray) and
returns `LineBatch`es. Rules, so that the counts always add up:

- A line ends at b"\\n"; a b"\\r\\n" ending counts as b"\\n" (the b"\\r" is dropped). The text
  after the last b"\\n" of the stream is one more line (`finish`), unless it is empty.
- Line numbers are 1-based and count every line, blank or not.
- A line longer than `max_line` bytes (without its ending) is still one line: it is kept cut to
  its first `max_line` bytes and `LineBatch.full_length` records its real length, so the
  splitter never holds more than about one chunk plus `max_line` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from stages.ingest.core.scratch import scratch

MAX_LINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class LineBatch:
    """Consecutive lines of one stream.

    data: the lines, each followed by b"\\n" (so len(data) == offsets[-1]).
    offsets: int64[n + 1]; line i is data[offsets[i] : offsets[i + 1] - 1] (without its b"\\n").
    first_line: the 1-based line number of line 0.
    full_length: index -> real length in bytes, only for lines cut to `max_line`.
    """

    data: bytes
    offsets: npt.NDArray[np.int64]
    first_line: int
    full_length: dict[int, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1

    def line(self, index: int) -> bytes:
        """Line `index` without its line end."""
        return self.data[int(self.offsets[index]) : int(self.offsets[index + 1]) - 1]


def _batch(
    data: bytes,
    first_line: int,
    max_line: int,
    long_first: int = 0,
) -> LineBatch:
    """Lines of `data` (empty, or ending with b"\\n"), long ones cut to `max_line` bytes.

    `long_first` > 0 is the real length of line 0 when the caller already cut it.
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    hits = np.equal(raw, 10, out=scratch("lines.newline", len(raw), np.bool_))
    ends = np.flatnonzero(hits)
    offsets = np.empty(ends.shape[0] + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:] = ends + 1
    lengths = np.diff(offsets) - 1
    if long_first:
        lengths[0] = long_first
    too_long = np.flatnonzero(lengths > max_line)
    if too_long.shape[0] == 0:
        return LineBatch(data, offsets, first_line)
    # Rare: rebuild with the long lines cut, remembering their real lengths.
    parts: list[bytes] = []
    start = 0
    for index in too_long.tolist():
        begin = int(offsets[index])
        parts.append(data[start:begin])
        parts.append(data[begin : begin + max_line] + b"\n")
        start = int(offsets[index + 1])
    parts.append(data[start:])
    cut = _batch(b"".join(parts), first_line, max_line)
    full = {int(i): int(lengths[i]) for i in too_long}
    return LineBatch(cut.data, cut.offsets, first_line, full)


class LineSplitter:
    """Stateful splitter (pure: no I/O). Feed chunks in stream order, then call `finish` once."""

    def __init__(self, max_line: int = MAX_LINE_BYTES, first_line: int = 1) -> None:
        """first_line: the number of the stream's first line (> 1 when it starts mid-file)."""
        if max_line < 1 or first_line < 1:
            raise ValueError("max_line and first_line must be >= 1")
        self._max = max_line
        self._tail = b""  # the unfinished line, at most max_line + 1 bytes of it
        self._tail_length = 0  # its real length so far
        self._next_line = first_line
        self._pending_cr = False  # the previous chunk ended with b"\r"

    def _make(self, data: bytes, long_first: int = 0) -> LineBatch:
        batch = _batch(data, self._next_line, self._max, long_first)
        self._next_line += len(batch)
        return batch

    def feed(self, chunk: bytes | bytearray) -> LineBatch:
        """The lines completed by `chunk` (possibly none); `chunk` is not kept."""
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk.endswith(b"\r"):  # maybe half of a b"\r\n": decide with the next chunk
            self._pending_cr = True
            chunk = chunk[:-1]
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        last = chunk.rfind(b"\n")
        if last < 0:
            self._grow(chunk)
            return self._make(b"")
        # One copy of the chunk at most (it is megabytes): slices of a memoryview copy nothing.
        view, long_first = memoryview(chunk), 0
        if self._tail_length:
            first = chunk.find(b"\n")
            self._grow(view[:first])
            tail, long_first = self._take_tail()
            head = b"".join((tail, view[first : last + 1]))
        elif isinstance(chunk, bytes) and last == len(chunk) - 1:
            head = chunk
        else:
            head = bytes(view[: last + 1])
        self._grow(view[last + 1 :])
        return self._make(head, long_first)

    def pending_bytes(self) -> int:
        """Bytes fed but not yet part of a returned line (the unfinished line, a held b"\\r"):
        bytes fed so far minus this is where the last returned line ends in the stream."""
        return self._tail_length + int(self._pending_cr)

    def finish(self) -> LineBatch:
        """The last line when the stream does not end with b"\\n" (an empty batch otherwise).

        A b"\\r" at the very end of the stream is taken as a line end.
        """
        self._pending_cr = False
        if not self._tail_length:
            return self._make(b"")
        tail, long_first = self._take_tail()
        return self._make(tail + b"\n", long_first)

    def _grow(self, piece: bytes | bytearray | memoryview) -> None:
        room = self._max + 1 - len(self._tail)
        if room > 0:
            self._tail += piece[:room]
        self._tail_length += len(piece)

    def _take_tail(self) -> tuple[bytes, int]:
        """The unfinished line, and its real length when it was cut (else 0)."""
        tail, length = self._tail, self._tail_length
        self._tail, self._tail_length = b"", 0
        return tail, (length if length > len(tail) else 0)
