"""The acknowledged position: the tracker, skipping and seeking in files, the position file."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stages.common.errors import IngestError
from stages.ingest.core.lines import LineSplitter
from stages.ingest.core.pacing import tail
from stages.ingest.core.position import AckedPosition, AckTracker, SeekPoint
from stages.ingest.position import (
    FileIdentity,
    acked_of,
    load_position,
    position_file,
    save_position,
)
from stages.ingest.sources import FileStart, file_batches

START = AckedPosition(0, SeekPoint(0, 0))


def test_tracker_moves_only_at_quiet_points_and_freezes_on_a_failure() -> None:
    tracker = AckTracker(START, interval_s=1.0, save_gap_s=0.1, now=0.0)
    tracker.handed(10, SeekPoint(10, 100))
    tracker.handed(5, None)
    assert tracker.acked == START and not tracker.barrier_due(0.5)
    assert tracker.barrier_due(1.0)
    tracker.quiet(failed=0, now=1.0)
    assert tracker.acked == AckedPosition(15, SeekPoint(10, 100)) and tracker.all_acked
    assert tracker.save_due(1.0)
    tracker.saved(1.0)
    assert not tracker.save_due(2.0)
    tracker.handed(7, None)
    tracker.quiet(failed=1, now=2.0)  # a record failed: never past the last good position
    tracker.handed(3, None)
    tracker.quiet(failed=0, now=3.0)
    assert tracker.acked.lines == 15 and tracker.frozen and not tracker.all_acked
    assert not tracker.barrier_due(10.0)


def test_tail_drops_lines_and_keeps_numbers() -> None:
    batch = LineSplitter(max_line=3).feed(b"a\nbbbbbb\nc\n")
    rest = tail(batch, 1)
    assert (rest.first_line, len(rest), rest.line(0), rest.full_length) == (2, 2, b"bbb", {0: 6})
    assert len(tail(batch, 5)) == 0 and tail(batch, 0) is batch


def _lines_after(
    path: Path, start: FileStart | None, chunk: int = 64 << 10
) -> list[tuple[int, bytes]]:
    out = []
    for item in file_batches(path, chunk_bytes=chunk, max_line=1024, start=start):
        out += [(item.lines.first_line + i, item.lines.line(i)) for i in range(len(item.lines))]
    return out


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), max_size=40),
    crlf=st.booleans(),
    chunk=st.integers(1, 20),
)
def test_end_bytes_are_line_boundaries(rows: list[bytes], crlf: bool, chunk: int) -> None:
    """Every batch's end_byte is where its last line ends in the file, so seeking there and
    numbering from the next line reads exactly the rest."""
    import tempfile

    end = b"\r\n" if crlf else b"\n"
    data = b"".join(r + end for r in rows)
    assume(not data.startswith(b"\x1f\x8b"))  # gzip's magic: read as (broken) gzip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.tsv"
        path.write_bytes(data)
        everything = _lines_after(path, None)
        for item in file_batches(path, chunk_bytes=chunk, max_line=1024):
            assert item.end_byte is not None
            last = item.lines.first_line + len(item.lines) - 1
            assert data[: item.end_byte].count(b"\n") == last or item.end_byte == len(data)
            seek = SeekPoint(last, item.end_byte)
            rest = _lines_after(path, FileStart(seek, skip_through=last), chunk)
            assert rest == everything[last:]


def test_a_gzip_file_skips_to_the_position(tmp_path: Path) -> None:
    path = tmp_path / "rows.gz"
    path.write_bytes(gzip.compress(b"".join(b"row%d\n" % i for i in range(1, 101))))
    start = FileStart(SeekPoint(40, 999), skip_through=57)  # a gzip file ignores the byte
    rest = _lines_after(path, start, chunk=64)
    assert rest[0] == (58, b"row58") and len(rest) == 43
    assert all(i.end_byte is None for i in file_batches(path, chunk_bytes=64, max_line=99))


def test_position_file_round_trip_and_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "rows.tsv"
    path.write_bytes(b"a\nb\nc\n")
    identity = FileIdentity.of(path)
    where = position_file(tmp_path / "state", identity)
    assert where.parent == tmp_path / "state" / "ingest" / "positions"
    assert load_position(where, identity) is None
    acked = AckedPosition(2, SeekPoint(2, 4))
    save_position(where, identity, acked, complete=False)
    saved = load_position(where, identity)
    assert saved is not None and acked_of(saved) == acked and not saved.complete
    assert [p.name for p in where.parent.iterdir()] == [where.name]  # no temporary file left
    os.utime(path, ns=(1, 1))  # another version of the file: the position does not apply
    assert load_position(where, FileIdentity.of(path)) is None


def test_a_broken_position_file_is_an_error_naming_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / "rows.tsv"
    path.write_bytes(b"a\n")
    identity = FileIdentity.of(path)
    where = position_file(tmp_path, identity)
    save_position(where, identity, AckedPosition(1, SeekPoint(1, 2)), complete=True)
    record = json.loads(where.read_text())
    where.write_text(json.dumps({**record, "offset": 3}))
    with pytest.raises(IngestError, match="unknown field 'offset'.*--from-start"):
        load_position(where, identity)
    where.write_text('{"schema_version": 1, "li')
    with pytest.raises(IngestError, match="unreadable"):
        load_position(where, identity)
