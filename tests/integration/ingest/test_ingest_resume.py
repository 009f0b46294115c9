"""Chaos: `freshrec ingest --source FILE` as a real process, SIGKILLed or SIGTERMed mid-file,
then run again: counted by consuming the topic.

- SIGKILL: the re-run resumes after the last saved position; only the lines acknowledged after
  that save (and those in flight) arrive twice, and each copy has the same event id (key).
- SIGTERM: the process flushes, saves the position and exits 0; the position equals what the
  topic holds, and the re-run completes the file with every row exactly once.
- A run cut by --limit resumes a plain file (a byte seek) with dead letters counted once.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from stages.common.settings import CommonSettings, load_settings
from stages.ingest.run import run_ingest
from stages.ingest.settings import IngestSettings
from stages.ingest.sources import file_tag

ReadTopic = Callable[[str, str], list[tuple[bytes, bytes]]]

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[3]
RATE = 2000  # lines/s: the 10k sample takes about 5 s, so a signal lands mid-file
_BIN = Path(sys.executable).parent / "freshrec"
FRESHREC = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "flows.cli"]


def _env(common: CommonSettings) -> dict[str, str]:
    return {
        **os.environ,
        "FRESHREC_KAFKA_BOOTSTRAP": common.kafka_bootstrap,
        "FRESHREC_STATE_DIR": str(common.state_dir),
        "FRESHREC_TOPIC_EVENTS": common.topic_events,
        "FRESHREC_TOPIC_EVENTS_DLQ": common.topic_events_dlq,
        "FRESHREC_INGEST_LINGER_MS": "5",
    }


def _start(common: CommonSettings, source: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [*FRESHREC, "ingest", "--source", str(source), "--quiet", *extra]
    return subprocess.Popen(
        command, env=_env(common), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _run(common: CommonSettings, source: Path, *extra: str) -> str:
    process = _start(common, source, *extra)
    _, err = process.communicate(timeout=180)
    assert process.returncode == 0, err.decode()
    return err.decode()


def _position(common: CommonSettings) -> dict[str, object] | None:
    files = list((common.state_dir / "ingest" / "positions").glob("*.json"))
    return json.loads(files[0].read_text()) if files else None


def _wait_for_position(common: CommonSettings, lines: int, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1].decode()
        saved = _position(common)
        if saved is not None and int(str(saved["lines"])) >= lines:
            return int(str(saved["lines"]))
        time.sleep(0.02)
    raise AssertionError(f"no position of {lines} lines within 60 s")


def _summary(stderr: str) -> tuple[int, int, int]:
    found = re.search(r"read ([\d,]+), sent ([\d,]+), dead-lettered ([\d,]+)", stderr)
    assert found, stderr
    read, sent, dead = (int(g.replace(",", "")) for g in found.groups())
    return read, sent, dead


def _keys(common: CommonSettings, read_topic: ReadTopic) -> Counter[bytes]:
    records = read_topic(common.kafka_bootstrap, common.topic_events)
    records += read_topic(common.kafka_bootstrap, common.topic_events_dlq)
    return Counter(k for k, _ in records)


def test_sigkill_then_rerun_sends_the_rest_with_stable_event_ids(
    criteo_sample: Path, make_settings: Callable[..., CommonSettings], read_topic: ReadTopic
) -> None:
    common = make_settings("kafka")
    rows = len(gzip.decompress(criteo_sample.read_bytes()).splitlines())
    tag = file_tag(criteo_sample).encode()
    first = _start(common, criteo_sample, "--rate", str(RATE))
    _wait_for_position(common, rows // 3, first)
    time.sleep(0.33)  # not right after a save: somewhere between two of them
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    saved = _position(common)
    assert saved is not None and not saved["complete"]
    done = int(str(saved["lines"]))
    assert 0 < done < rows

    err = _run(common, criteo_sample, "--rate", str(RATE))
    assert f"resuming {criteo_sample} at line {done + 1} ({done} rows already acknowledged)" in err
    read, sent, dead = _summary(err)
    assert (read, sent + dead) == (rows - done, rows - done)
    assert f"resumed at line {done + 1:,}" in err

    keys = _keys(common, read_topic)
    assert set(keys) == {b"%s:%d" % (tag, i) for i in range(rows)}  # every row, same ids
    twice = {k for k, n in keys.items() if n > 1}
    assert all(n <= 2 for n in keys.values())
    # Only lines after the saved position can be duplicated: sent by the killed run after its
    # last save, and again by the re-run.
    assert all(int(k.split(b":")[1]) >= done for k in twice)
    print(f"SIGKILL at line {done} of {rows}: {len(twice)} rows sent twice")
    assert len(twice) <= RATE  # at most about one second of the rate (the save interval)

    again = _run(common, criteo_sample)
    assert "was ingested completely" in again and _summary(again) == (0, 0, 0)


def test_sigterm_flushes_saves_exactly_what_the_broker_has_and_rerun_completes(
    criteo_sample: Path, make_settings: Callable[..., CommonSettings], read_topic: ReadTopic
) -> None:
    common = make_settings("kafka")
    rows = len(gzip.decompress(criteo_sample.read_bytes()).splitlines())
    first = _start(common, criteo_sample, "--rate", str(RATE))
    _wait_for_position(common, rows // 3, first)
    time.sleep(0.33)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err.decode()
    read, sent, dead = _summary(err.decode())
    saved = _position(common)
    assert saved is not None and not saved["complete"]
    keys = _keys(common, read_topic)
    assert saved["lines"] == read == sent + dead == sum(keys.values()) == len(keys) < rows
    print(f"SIGTERM at line {read} of {rows}: position {saved['lines']}, topic {len(keys)}")

    err2 = _run(common, criteo_sample)
    assert _summary(err2)[0] == rows - read
    keys = _keys(common, read_topic)
    assert len(keys) == rows and set(keys.values()) == {1}  # every row exactly once
    final = _position(common)
    assert final is not None and final["complete"] and final["lines"] == rows

    again = _run(common, criteo_sample, "--from-start", "--limit", "10")
    assert "--from-start: sending" in again and _summary(again)[0] == 10


def test_a_limited_run_resumes_with_dead_letters_counted_once(
    criteo_sample: Path, make_settings: Callable[..., CommonSettings], read_topic: ReadTopic,
    tmp_path: Path,
) -> None:  # fmt: skip
    common = make_settings("kafka")
    good = gzip.decompress(criteo_sample.read_bytes()).splitlines()[:1000]
    lines = [b"bad row %d" % i if i % 97 == 5 else row for i, row in enumerate(good)]
    path = tmp_path / "mixed.tsv"  # plain: the re-run seeks to a byte offset
    path.write_bytes(b"\n".join(lines) + b"\n")
    settings = load_settings(IngestSettings, linger_ms=5, chunk_bytes=64 << 10)
    first = run_ingest(common, settings, path, limit=600, progress=False)
    second = run_ingest(common, settings, path, progress=False)
    assert (first.read, second.read, second.resumed_from_line) == (600, 400, 601)
    bad = sum(1 for i in range(1000) if i % 97 == 5)
    assert first.dead_lettered + second.dead_lettered == bad
    assert first.sent + second.sent == 1000 - bad
    keys = _keys(common, read_topic)
    assert len(keys) == 1000 and set(keys.values()) == {1}
