"""Run a command with its stdout and stderr written to a log file that rotates by size.

    python -m infra.services.logpipe FILE MAX_BYTES BACKUPS -- COMMAND [ARG ...]

The embedded services and the demo's worker and serving run for days after the command that
started them has returned (`freshrec infra up` exits at once), so nothing in that command can
rotate their logs, and a process appending to an inherited file handle never lets go of it
(renaming the file does not help; copy-and-truncate loses lines and leaves a sparse file). So
each long-running process is started under this wrapper: it starts COMMAND as its child with
the output on a pipe, copies the pipe into FILE, and when FILE would pass MAX_BYTES it renames
FILE -> FILE.1 -> ... -> FILE.BACKUPS (the oldest dropped) and opens a new FILE, at a line
boundary when the chunk has one. At most (BACKUPS + 1) x MAX_BYTES of log stay on disk.

The wrapper stays in the child's process group and ends with the child: it exits with the
child's exit status (128 + signal when the child was killed) once the child has exited and its
output is drained. SIGTERM, SIGINT and SIGHUP sent to the wrapper are passed on to the child;
if the wrapper itself dies, the kernel sends the child SIGTERM (PR_SET_PDEATHSIG on Linux), so
no service outlives it unlogged. Standard library only.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

MAX_BYTES = 10 << 20
BACKUPS = 3
_CHUNK = 1 << 16
_PR_SET_PDEATHSIG = 1


def wrapped(argv: Sequence[str], log_path: Path, max_bytes: int = MAX_BYTES,
            backups: int = BACKUPS) -> list[str]:
    """`argv` run under the wrapper, its output going to `log_path` (rotated)."""
    return [sys.executable, "-m", "infra.services.logpipe", str(log_path), str(max_bytes),
            str(backups), "--", *argv]


class RotatingFile:
    """Appends bytes to `path`; before a write would pass `max_bytes`, shifts the file to
    `path.1` (and `.1` to `.2`, ..., keeping `backups` of them) and starts a new one, so no file
    passes `max_bytes`. Files end at a line boundary unless one line is longer than a file.
    With `backups = 0` the file starts over instead."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        if max_bytes < 1 or backups < 0:
            raise ValueError(f"max_bytes must be >= 1 and backups >= 0: {max_bytes}, {backups}")
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        self._file: BinaryIO = open(path, "ab")  # noqa: SIM115  # closed in close()/rotate()
        self._size = self._file.tell()

    def write(self, data: bytes) -> None:
        while data:
            room = max(0, self.max_bytes - self._size)
            if len(data) <= room:
                self._write(data)
                return
            cut = data.rfind(b"\n", 0, room) + 1  # finish the file at a line boundary
            if cut == 0 and self._size == 0:
                cut = room  # a line longer than a whole file is split
            if cut:
                self._write(data[:cut])
                data = data[cut:]
            self.rotate()

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()
        self._size += len(data)

    def rotate(self) -> None:
        self._file.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
            if self.path.exists():
                os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = open(self.path, "ab")  # noqa: SIM115
        self._size = 0

    def close(self) -> None:
        self._file.close()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the wrapper dies (Linux; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def run(command: Sequence[str], log: RotatingFile) -> int:
    """Run `command`, copy its output into `log` until it exits; its exit status."""
    try:
        child = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
    except OSError as exc:  # into the log, where `freshrec infra up` shows the last line
        log.write(f"logpipe: cannot start {command[0]}: {exc}\n".encode())
        return 127

    def forward(signum: int, frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    if child.stdout is None:  # Popen with stdout=PIPE always has one
        raise RuntimeError("no pipe from the child")
    fd = child.stdout.fileno()
    while True:
        try:
            chunk = os.read(fd, _CHUNK)
        except InterruptedError:
            continue
        if not chunk:  # every writer closed: the child and whatever inherited its output
            break
        log.write(chunk)
    status = child.wait()
    return 128 - status if status < 0 else status


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 5 or args[3] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    path, max_bytes, backups, command = Path(args[0]), int(args[1]), int(args[2]), args[4:]
    path.parent.mkdir(parents=True, exist_ok=True)
    log = RotatingFile(path, max_bytes, backups)
    try:
        return run(command, log)
    finally:
        log.close()


if __name__ == "__main__":
    sys.exit(main())
