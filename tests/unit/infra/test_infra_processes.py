"""Pid files and process groups, with throwaway local processes (no services)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from infra.services.process import (
    PidRecord,
    find_process,
    read_pid_file,
    remove_pid_file,
    spawn,
    stop_group,
    write_pid_file,
)
from stages.common.errors import InfraError

# A parent that starts a child in its own group, both sleeping (and the parent ignoring SIGTERM,
# so that stop_group has to escalate to SIGKILL for it).
_PARENT = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "time.sleep(60)\n"
)


def _record_of(pid: int) -> PidRecord:
    proc = psutil.Process(pid)
    return PidRecord(pid, proc.create_time(), tuple(proc.cmdline()), "x")


def test_pid_file_round_trip(tmp_path: Path) -> None:
    record = PidRecord(1234, 1700000000.25, ("tansu", "broker"), "127.0.0.1:9092")
    path = tmp_path / "server.pid"
    write_pid_file(path, record)
    assert read_pid_file(path) == record
    remove_pid_file(path)
    assert read_pid_file(path) is None
    remove_pid_file(path)  # idempotent


def test_a_corrupt_pid_file_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "server.pid"
    path.write_text("12345\n")
    with pytest.raises(InfraError, match="delete it"):
        read_pid_file(path)


def test_find_process_checks_the_start_time() -> None:
    me = _record_of(os.getpid())
    assert find_process(me) is not None
    reused = PidRecord(me.pid, me.create_time - 100.0, me.argv, me.url)
    assert find_process(reused) is None


def test_a_reused_pid_is_never_signalled() -> None:
    # This very process, described with another start time: a pid the OS has reused.
    me = _record_of(os.getpid())
    stale = PidRecord(me.pid, me.create_time - 100.0, me.argv, me.url)
    assert stop_group(stale, grace_s=0.1) == 0
    assert psutil.Process(os.getpid()).is_running()


def test_stop_group_leaves_no_process_behind(tmp_path: Path) -> None:
    record = spawn([sys.executable, "-c", _PARENT], os.environ, tmp_path, tmp_path / "log")
    deadline = time.monotonic() + 20
    leader = psutil.Process(record.pid)
    while not leader.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    family = [leader, *leader.children(recursive=True)]
    assert len(family) == 2
    assert os.getpgid(family[1].pid) == record.pid

    assert stop_group(record, grace_s=0.5) == 2
    for proc in family:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    assert find_process(record) is None


def test_stop_group_finds_children_of_an_exited_leader(tmp_path: Path) -> None:
    # The leader exits at once; its child stays in the group and must still be stopped.
    script = (
        "import subprocess, sys; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])"
    )
    record = spawn([sys.executable, "-c", script], os.environ, tmp_path, tmp_path / "log")
    deadline = time.monotonic() + 20
    orphans: list[psutil.Process] = []
    while (not orphans or find_process(record)) and time.monotonic() < deadline:
        time.sleep(0.05)
        orphans = [
            p for p in psutil.process_iter() if _pgid(p.pid) == record.pid and p.pid != record.pid
        ]
    assert orphans and find_process(record) is None
    stop_group(record, grace_s=2.0)
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in orphans)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_spawn_detaches_into_a_new_session(tmp_path: Path) -> None:
    record = spawn(
        [sys.executable, "-c", "import time; time.sleep(30)"], os.environ, tmp_path, tmp_path / "l"
    )
    try:
        assert os.getsid(record.pid) == record.pid != os.getsid(0)
    finally:
        stop_group(record, grace_s=2.0)
