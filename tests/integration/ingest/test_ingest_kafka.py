"""Ingest against the real broker: exactly-once arrival, dead letters, gzip, stdin, random bytes."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stages.common.events import decode_events
from stages.common.settings import CommonSettings, load_settings
from stages.common.dead_letter import DeadLetterRecord, FilePosition
from stages.ingest.run import run_ingest
from stages.ingest.settings import IngestSettings
from stages.ingest.sources import file_tag

ReadTopic = Callable[[str, str], list[tuple[bytes, bytes]]]

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
FAST = load_settings(IngestSettings, linger_ms=5, progress_interval_s=60)


def test_every_valid_row_of_the_sample_arrives_exactly_once(
    criteo_sample: Path, make_settings: Callable[..., CommonSettings], read_topic: ReadTopic
) -> None:
    common = make_settings("kafka")
    summary = run_ingest(common, FAST, criteo_sample, progress=False)
    rows = gzip.decompress(criteo_sample.read_bytes()).splitlines()
    assert (summary.read, summary.sent, summary.dead_lettered, summary.failed) == (
        len(rows), len(rows), 0, 0
    )
    records = read_topic(common.kafka_bootstrap, common.topic_events)
    tag = file_tag(criteo_sample)
    expected = sorted(b"%s:%d" % (tag.encode(), i) for i in range(len(rows)))
    assert sorted(k for k, _ in records) == expected
    decoded = decode_events([v for _, v in records])
    assert not decoded.bad
    by_id = {k: v.split(b"\t", 4)[4] for k, v in records}
    assert all(by_id[b"%s:%d" % (tag.encode(), i)] == row for i, row in enumerate(rows))
    assert read_topic(common.kafka_bootstrap, common.topic_events_dlq) == []


BAD_LINES = {
    3: (b"0\t1\t2", "wrong number of fields"),
    10: (b"", "blank line"),
    50: (None, "label must be 0 or 1"),
    100: (None, "I5 is not an integer"),
    200: (None, "C3 is not hex (1 to 8 digits)"),
    300: (b"\xff\xfe\x00binary", "not UTF-8"),
    400: (b"1" * 70_000, "line too long"),
}


def mixed_file(tiny: Path, tmp_path: Path) -> tuple[Path, list[bytes]]:
    """criteo_tiny with bad lines inserted at the line numbers of BAD_LINES (1-based)."""
    good = tiny.read_bytes().splitlines()
    lines: list[bytes] = []
    source = iter(good)
    while len(lines) < len(good) + len(BAD_LINES):
        number = len(lines) + 1
        if number in BAD_LINES:
            raw, _ = BAD_LINES[number]
            if raw is None:
                fields = next(iter(good)).split(b"\t")
                which = {50: 0, 100: 5, 200: 16}[number]
                fields[which] = {50: b"2", 100: b"1.5", 200: b"ABCDEFG1"}[number]
                raw = b"\t".join(fields)
            lines.append(raw)
        else:
            lines.append(next(source))
    path = tmp_path / "mixed.tsv"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")  # CRLF on purpose
    return path, good


def test_malformed_rows_go_to_the_dead_letter_topic_with_reasons(
    criteo_tiny: Path,
    tmp_path: Path,
    make_settings: Callable[..., CommonSettings],
    read_topic: ReadTopic,
) -> None:
    common = make_settings("kafka")
    path, good = mixed_file(criteo_tiny, tmp_path)
    summary = run_ingest(common, FAST, path, progress=False)
    assert (summary.read, summary.sent, summary.dead_lettered) == (len(good) + 7, len(good), 7)
    assert sum(summary.by_reason.values()) == 7
    dlq = read_topic(common.kafka_bootstrap, common.topic_events_dlq)
    letters = [DeadLetterRecord.parse(v) for _, v in dlq]
    assert all(d.stage == "ingest" and d.key == k for (k, _), d in zip(dlq, letters))
    at = {d.position.line: d for d in letters if isinstance(d.position, FilePosition)}
    assert sorted(at) == sorted(BAD_LINES)
    letters = [at[line] for line in sorted(at)]
    for line, letter in at.items():
        assert letter.kind.startswith(BAD_LINES[line][1]), letter.reason
        position = letter.position
        assert isinstance(position, FilePosition)
        assert position.source == str(path.resolve()) and position.seq == line - 1
    assert letters[-1].raw_length == 70_000 and len(letters[-1].raw) == FAST.max_line_bytes
    assert letters[0].raw == b"0\t1\t2"
    events = read_topic(common.kafka_bootstrap, common.topic_events)
    assert sorted(v.split(b"\t", 4)[4] for _, v in events) == sorted(good)


def test_stdin_through_the_cli(
    criteo_tiny: Path, make_settings: Callable[..., CommonSettings], read_topic: ReadTopic
) -> None:
    common = make_settings("kafka")
    env = {
        **os.environ,
        "FRESHREC_KAFKA_BOOTSTRAP": common.kafka_bootstrap,
        "FRESHREC_TOPIC_EVENTS": common.topic_events,
        "FRESHREC_TOPIC_EVENTS_DLQ": common.topic_events_dlq,
    }
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "ingest", "--source", "-"],
        input=criteo_tiny.read_bytes() + b"bad row\n",
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"read 1,001, sent 1,000, dead-lettered 1" in done.stderr
    events = read_topic(common.kafka_bootstrap, common.topic_events)
    assert len(events) == 1000 and all(k.startswith(b"s") for k, _ in events)


def test_synthetic_source_with_rate_and_limit(
    make_settings: Callable[..., CommonSettings], read_topic: ReadTopic
) -> None:
    common = make_settings("kafka")
    started = time.monotonic()
    summary = run_ingest(common, FAST, "synthetic", rate=2000, limit=1000, progress=False)
    assert (summary.read, summary.sent) == (1000, 1000)
    assert time.monotonic() - started > 0.3  # 1000 events at 2000/s with a 200-event burst
    keys = {k for k, _ in read_topic(common.kafka_bootstrap, common.topic_events)}
    assert len(keys) == 1000 and all(k.startswith(b"syn0-") for k in keys)


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.binary(max_size=5000))
def test_random_bytes_counts_add_up_on_the_broker(
    data: bytes, make_settings: Callable[..., CommonSettings], read_topic: ReadTopic
) -> None:
    common = make_settings("kafka")
    summary = run_ingest(common, FAST, io.BytesIO(data), progress=False)
    assert summary.failed == 0
    assert summary.read == summary.sent + summary.dead_lettered
    assert len(read_topic(common.kafka_bootstrap, common.topic_events)) == summary.sent
    assert len(read_topic(common.kafka_bootstrap, common.topic_events_dlq)) == summary.dead_lettered
