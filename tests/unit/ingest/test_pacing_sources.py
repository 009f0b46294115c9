"""Token bucket, batch cutting, the summary invariant, source tags and file reading."""

from __future__ import annotations

import gzip
import io
import os
from collections import Counter
from pathlib import Path

import pytest

from stages.common.errors import ConfigError, IngestError
from stages.ingest.core.lines import LineSplitter
from stages.ingest.core.pacing import Tally, TokenBucket, head, split, summarize
from stages.ingest.sources import check_loop, file_batches, file_tag, stream_batches, stream_tag


def test_token_bucket_paces_to_the_rate() -> None:
    bucket = TokenBucket(rate=100.0, burst=10.0, now=0.0)
    assert bucket.wait(10, now=0.0) == 0.0  # the initial burst
    assert bucket.wait(50, now=0.0) == pytest.approx(0.5)
    assert bucket.wait(10, now=0.6) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, now=0)


def test_head_and_split_keep_line_numbers_and_long_lines() -> None:
    splitter = LineSplitter(max_line=4)
    batch = splitter.feed(b"a\nbbbbbbb\nc\nd\ne\n")
    parts = split(batch, 2)
    assert [p.first_line for p in parts] == [1, 3, 5]
    assert [parts[0].line(1), parts[0].full_length] == [b"bbbb", {1: 7}]
    assert [parts[1].line(0), parts[2].line(0)] == [b"c", b"e"]
    short = head(batch, 3)
    assert len(short) == 3 and short.line(2) == b"c"
    assert head(batch, 99) is batch


def test_summary_counts_failures_out_of_sent() -> None:
    tally = Tally(read=10, queued=8, dead=2, by_reason=Counter({"blank line": 2}))
    summary = summarize(tally, failed_events=1, failed_dead=0, seconds=2.0, stopped=False)
    assert (summary.sent, summary.dead_lettered, summary.failed) == (7, 2, 1)
    assert summary.read == summary.sent + summary.dead_lettered + summary.failed
    assert "blank line: 2" in summary.describe()


def test_file_tag_is_stable_and_changes_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rows.tsv"
    path.write_bytes(b"x\n")
    tag = file_tag(path)
    assert tag == file_tag(path) and len(tag) <= 32
    os.utime(path, ns=(1, 1))
    assert file_tag(path) != tag
    assert stream_tag() != stream_tag()


def test_gzip_is_detected_by_magic_bytes_and_loop_renumbers(tmp_path: Path) -> None:
    path = tmp_path / "rows.data"  # no .gz suffix on purpose
    path.write_bytes(gzip.compress(b"a\nb\nc"))
    batches = file_batches(path, chunk_bytes=2, max_line=100, loop=True)
    seen = []
    for item in batches:
        for i in range(len(item.lines)):
            seq = item.position.seq_base + item.lines.first_line + i - 1
            seen.append((seq, item.lines.line(i)))
        if len(seen) >= 6:
            break
    assert seen[:6] == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"a"), (4, b"b"), (5, b"c")]


def test_streams_get_fresh_tags_and_bad_inputs_raise(tmp_path: Path) -> None:
    items = list(stream_batches(io.BytesIO(b"a\nb\n"), chunk_bytes=1024, max_line=100))
    assert sum(len(i.lines) for i in items) == 2 and items[0].position.source == "-"
    with pytest.raises(ConfigError):
        check_loop("-", loop=True)
    check_loop(tmp_path / "f", loop=True)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage")
    with pytest.raises(IngestError):
        list(file_batches(bad, chunk_bytes=1024, max_line=100))


def test_a_file_read_in_small_chunks_gives_every_line_once(tmp_path: Path) -> None:
    lines = [b"x" * (i % 13) + b"%d" % i for i in range(500)]
    path = tmp_path / "rows.tsv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    for chunk in (7, 64, 4096):  # one read buffer, reused for every full chunk
        got = [
            item.lines.line(i)
            for item in file_batches(path, chunk_bytes=chunk, max_line=100)
            for i in range(len(item.lines))
        ]
        assert got == lines
