"""The rotating log wrapper (infra/services/logpipe.py): sizes, backups, exit status, signals,
and a service started by start_service writing through it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.services.logpipe import RotatingFile, main, wrapped

_WRITER = """
import sys
for i in range(int(sys.argv[1])):
    sys.stdout.write(f"line {i:06d} " + "x" * 88 + "\\n")  # 100 bytes a line
sys.stdout.flush()
sys.exit(int(sys.argv[2]))
"""


def _files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.glob(path.name + "*"))


def test_rotates_by_size_keeping_backups(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    status = main([str(log), "1000", "2", "--", sys.executable, "-c", _WRITER, "95", "3"])
    assert status == 3  # the child's exit status
    assert _files(log) == ["server.log", "server.log.1", "server.log.2"]
    for name in _files(log):
        data = (tmp_path / name).read_bytes()
        assert 0 < len(data) <= 1000 and data.endswith(b"\n")
    lines = b"".join((tmp_path / n).read_bytes() for n in ("server.log.2", "server.log.1",
                                                             "server.log")).splitlines()
    # the newest lines, in order, at line boundaries; the oldest rotated away
    assert lines[-1].startswith(b"line 000094")
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(numbers[0], 95)) and numbers[0] > 0


def test_appends_to_an_existing_file_and_truncates_without_backups(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"old\n")
    writer = RotatingFile(log, 10, 0)
    writer.write(b"12345\n")
    assert log.read_bytes() == b"old\n12345\n"
    writer.write(b"abc\n")  # would pass 10 bytes: starts over, no backup kept
    writer.close()
    assert log.read_bytes() == b"abc\n" and _files(log) == ["a.log"]
    with pytest.raises(ValueError):
        RotatingFile(log, 0, 1)


def test_a_missing_command_is_logged(tmp_path: Path) -> None:
    log = tmp_path / "s.log"
    assert main([str(log), "1000", "1", "--", str(tmp_path / "nope")]) == 127
    assert b"cannot start" in log.read_bytes()
    assert main([str(log), "1000"]) == 2  # usage


def test_sigterm_reaches_the_child_and_its_status_comes_back(tmp_path: Path) -> None:
    log = tmp_path / "s.log"
    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *a: (print('bye', flush=True), sys.exit(5)))\n"
              "print('ready', flush=True)\n"
              "time.sleep(60)\n")
    wrapper = subprocess.Popen(wrapped([sys.executable, "-c", script], log, 1000, 1),
                               cwd=Path(__file__).resolve().parents[3])
    deadline = time.monotonic() + 30
    while b"ready" not in (log.read_bytes() if log.exists() else b""):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(30) == 5
    assert log.read_bytes() == b"ready\nbye\n"


def test_child_dies_with_a_killed_wrapper(tmp_path: Path) -> None:
    log = tmp_path / "s.log"
    script = "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(60)\n"
    wrapper = subprocess.Popen(wrapped([sys.executable, "-c", script], log, 1000, 1),
                               cwd=Path(__file__).resolve().parents[3])
    deadline = time.monotonic() + 30
    while not (log.exists() and log.read_bytes().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(log.read_bytes().split()[0])
    wrapper.kill()
    wrapper.wait(10)
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"child {child} outlived its SIGKILLed wrapper")
