"""The train flow under Horovod: `horovodrun -np N --gloo` of `freshrec train` on the worker host.

Every rank runs the same command (see the README's section on several processes); rank 0 prints
the run's summary as one JSON line at the end, which becomes the flow's result. A stop (the
flow's duration, a cancel) sends SIGTERM to the whole process group: each rank finishes its
window, rank 0 exports and checkpoints, and the job ends.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from stages.common.errors import TrainError

log = logging.getLogger(__name__)
_GRACE_S = 120.0


def horovod_argv(ranks: int, replay: str | None, max_windows: int | None) -> list[str]:
    """The horovodrun command line for `ranks` processes on this host."""
    runner = shutil.which("horovodrun", path=str(Path(sys.executable).parent)) or shutil.which(
        "horovodrun"
    )
    if runner is None:
        raise TrainError("horovodrun is not installed: run `make install` (builds Horovod)")
    argv = [runner, "-np", str(ranks), "--gloo", "-H", f"localhost:{ranks}",
            str(Path(sys.executable).with_name("freshrec")), "train"]
    if replay:
        argv += ["--replay", replay]
    if max_windows is not None:
        argv += ["--max-windows", str(max_windows)]
    return argv


def _summary(line: str) -> dict[str, Any] | None:
    start = line.find('{"windows"')
    if start < 0:
        return None
    try:
        parsed: dict[str, Any] = json.loads(line[start:])
        return parsed
    except ValueError:
        return None


def run_ranks(
    ranks: int, replay: str | None, max_windows: int | None, stop: threading.Event
) -> dict[str, Any]:
    """Run the trainer on `ranks` Horovod processes until it ends or `stop` is set; its output
    goes to this process's stdout line by line. Returns rank 0's summary; TrainError when the
    job fails or prints none."""
    argv = horovod_argv(ranks, replay, max_windows)
    log.info("starting %s", " ".join(argv))
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)

    def stopper() -> None:
        stop.wait()
        if proc.poll() is None:
            log.info("stopping the %d trainer ranks", ranks)
            os.killpg(proc.pid, signal.SIGTERM)

    threading.Thread(target=stopper, name="horovod-stop", daemon=True).start()
    summary: dict[str, Any] | None = None
    for line in proc.stdout or ():
        print(line.rstrip("\n"))
        summary = _summary(line) or summary
    try:
        code = proc.wait(timeout=_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
    stop.set()  # ends the stopper thread
    if code != 0 or summary is None:
        raise TrainError(f"horovodrun of {ranks} trainer ranks ended with status {code}"
                         + ("" if summary else " and printed no summary"))
    return summary
