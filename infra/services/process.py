"""Detached service processes: spawning, pid files, and stopping a whole process group.

A pid file records the pid together with the process start time and command line, so that a pid
the OS has since given to an unrelated process is never signalled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from stages.common.errors import InfraError, MissingDependency

try:
    import psutil
except ImportError as exc:  # psutil comes with the `infra` extra
    raise MissingDependency("psutil", "infra") from exc

PID_FILE = "server.pid"
LOG_FILE = "server.log"
# psutil derives start times from boot time + clock ticks: equal for one process, up to rounding.
_START_TIME_SLACK_S = 0.05

# Popen objects of the processes this interpreter started. Stopping one reaps it through its
# Popen, so that it does not linger as a zombie (and Popen does not warn at exit).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class PidRecord:
    """What a pid file says about a service process that freshrec started."""

    pid: int
    create_time: float  # seconds since the epoch, as psutil reports it
    argv: tuple[str, ...]
    url: str


def write_pid_file(path: Path, record: PidRecord) -> None:
    """Write `record` to `path` atomically (a reader sees the old file or the new one)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(record)) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_pid_file(path: Path) -> PidRecord | None:
    """The record in `path`, None when there is no file; InfraError when it is unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return PidRecord(
            pid=int(data["pid"]),
            create_time=float(data["create_time"]),
            argv=tuple(str(a) for a in data["argv"]),
            url=str(data["url"]),
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise InfraError(
            f"{path} is not a freshrec pid file ({exc}): stop that service by hand and delete it"
        ) from None


def remove_pid_file(path: Path) -> None:
    """Delete `path` if it exists."""
    path.unlink(missing_ok=True)


def spawn(argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path) -> PidRecord:
    """Start `argv` in a new session (its own process group), output appended to `log_path`.

    The record's url is empty; the caller fills it in. The process outlives this interpreter.
    """
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[child.pid] = child
    create_time = psutil.Process(child.pid).create_time()
    return PidRecord(pid=child.pid, create_time=create_time, argv=tuple(argv), url="")


def _alive(proc: psutil.Process) -> bool:
    child = _CHILDREN.get(proc.pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def exit_status(record: PidRecord) -> int | None:
    """The exit status when `record`'s process was started here and has exited, else None."""
    child = _CHILDREN.get(record.pid)
    return None if child is None else child.poll()


def _same_process(record: PidRecord) -> psutil.Process | None:
    """The process with `record`'s pid and start time, even if it is a zombie."""
    try:
        proc = psutil.Process(record.pid)
        if abs(proc.create_time() - record.create_time) > _START_TIME_SLACK_S:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return proc


def find_process(record: PidRecord) -> psutil.Process | None:
    """The live process `record` describes; None when it exited or its pid now names another.

    Identity is the pid plus the start time (as psutil's own `is_running` does); the command
    line is not compared, since servers may rewrite their process title.
    """
    proc = _same_process(record)
    return proc if proc is not None and _alive(proc) else None


def _group_members(record: PidRecord, leader: psutil.Process | None) -> list[psutil.Process]:
    if leader is None and psutil.pid_exists(record.pid) and _same_process(record) is None:
        # The pid was handed to another process, which the kernel only does once no group
        # uses it as its id any more: nothing of ours is left.
        return []
    members: dict[int, psutil.Process] = {}
    if leader is not None:
        members[leader.pid] = leader
        for child in leader.children(recursive=True):
            members[child.pid] = child
    for proc in psutil.process_iter():
        try:
            if (
                os.getpgid(proc.pid) == record.pid
                and proc.create_time() >= record.create_time - _START_TIME_SLACK_S
            ):
                members.setdefault(proc.pid, proc)
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return list(members.values())


def _signal(procs: Iterable[psutil.Process], sig: signal.Signals) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p)]
    return alive


def stop_group(record: PidRecord, grace_s: float = 10.0) -> int:
    """Stop `record`'s process, its descendants and its process group; return how many.

    SIGTERM first; whatever still runs after `grace_s` seconds gets SIGKILL. Nothing is
    signalled when the pid now belongs to an unrelated process. Raises InfraError when a
    process survives SIGKILL.
    """
    members = _group_members(record, find_process(record))
    alive = [p for p in members if _alive(p)]
    _signal(alive, signal.SIGTERM)
    alive = _wait_gone(alive, grace_s)
    if alive:
        _signal(alive, signal.SIGKILL)
        alive = _wait_gone(alive, 5.0)
    child = _CHILDREN.pop(record.pid, None)
    if child is not None:
        child.poll()
    if alive:
        pids = ", ".join(str(p.pid) for p in alive)
        raise InfraError(f"processes {pids} did not stop on SIGKILL: check them with ps")
    return len(members)


def log_tail(log_path: Path, max_chars: int = 200) -> str:
    """The last non-empty line of a log file, shortened, for one-line error messages."""
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 8192))
            lines = [ln.strip() for ln in log.read().decode("utf-8", "replace").splitlines()]
    except FileNotFoundError:
        return ""
    last = next((ln for ln in reversed(lines) if ln), "")
    return last[:max_chars]
