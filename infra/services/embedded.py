"""One embedded service process: start it on a given port and directory, wait, stop it.

`start_service` is what the pytest fixtures use; `infra.services.manager` builds `freshrec infra
up|down|status` on top of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from infra.services.base import ServiceSpec
from infra.services.catalog import service_spec
from infra.services.logpipe import wrapped
from infra.services.ports import LOOPBACK, port_in_use
from infra.services.process import (
    LOG_FILE,
    PID_FILE,
    PidRecord,
    exit_status,
    find_process,
    log_tail,
    read_pid_file,
    remove_pid_file,
    spawn,
    stop_group,
    write_pid_file,
)
from stages.common.errors import InfraError, ServiceUnavailable
from stages.common.settings import CommonSettings

_POLL_S = 0.25
WRAPPER_LOG = "logpipe.log"  # the wrapper's own output (empty unless it fails)
_PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class RunningService:
    """A service process started by freshrec.

    `address` is its address without credentials (what the pid file records and messages
    show); `url` is the address clients use, with the password the service generated (the
    embedded Redis's): never print it, use `address` or `redact_url`.
    """

    spec: ServiceSpec
    directory: Path
    record: PidRecord

    @property
    def address(self) -> str:
        """The service's address without credentials."""
        return self.record.url

    @property
    def url(self) -> str:
        """The client address, with the service's credentials when it has any."""
        return self.spec.client_url(self.record.url, self.directory)

    @property
    def name(self) -> str:
        """The service's short name ("kafka", "redis", "mlflow", "prefect")."""
        return self.spec.name

    @property
    def pid(self) -> int:
        """Pid of the process group's leader: the log wrapper, whose child is the service."""
        return self.record.pid

    @property
    def log_path(self) -> Path:
        """The file that receives the process's stdout and stderr; it rotates by size
        (`server.log.1` ... `.3`, 10 MB each: infra/services/logpipe.py)."""
        return self.directory / LOG_FILE

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop the process and everything it started, and delete the pid file. Idempotent."""
        stop_group(self.record, grace_s)
        remove_pid_file(self.directory / PID_FILE)

    def __enter__(self) -> RunningService:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def port_in_use_message(spec: ServiceSpec, port: int) -> str:
    """The one-line error for a port that something other than freshrec listens on."""
    return (
        f"port {port} on {LOOPBACK} is in use by another process: stop it, "
        f"or set {spec.env_var} to use that {spec.label}"
    )


def attach(spec: ServiceSpec, directory: Path, clean_stale: bool = False) -> RunningService | None:
    """The service freshrec started in `directory` if it still runs, else None.

    With `clean_stale`, a pid file whose process has exited is deleted, after stopping any
    children that outlived it.
    """
    pid_path = directory / PID_FILE
    record = read_pid_file(pid_path)
    if record is None:
        return None
    if find_process(record) is None:
        if clean_stale:
            stop_group(record, grace_s=2.0)
            remove_pid_file(pid_path)
        return None
    return RunningService(spec=spec, directory=directory, record=record)


def wait_ready(
    service: RunningService, timeout_s: float, settings: CommonSettings | None = None
) -> str:
    """Probe `service` until it answers; return the probe's description.

    Raises InfraError naming the log file when the process exits or `timeout_s` passes.
    """
    deadline = time.monotonic() + timeout_s
    spec, record = service.spec, service.record
    while True:
        status = exit_status(record)
        if status is not None or find_process(record) is None:
            how = f" with status {status}" if status is not None else ""
            tail = log_tail(service.log_path)
            raise InfraError(
                f"the {spec.label} exited during start-up{how}: see {service.log_path}"
                + (f" (last line: {tail})" if tail else "")
            )
        try:
            return spec.probe(service.url, settings, _PROBE_TIMEOUT_S)
        except ServiceUnavailable as exc:
            last_error = str(exc)
        if time.monotonic() >= deadline:
            raise InfraError(
                f"the {spec.label} (pid {record.pid}) did not answer within {timeout_s:.0f} s "
                f"({last_error}): see {service.log_path}"
            )
        time.sleep(_POLL_S)


def start_service(
    spec: ServiceSpec | str,
    port: int,
    directory: Path,
    *,
    url: str | None = None,
    timeout_s: float | None = None,
) -> RunningService:
    """Start one service on 127.0.0.1:`port`, data, log and pid file in `directory`.

    Returns once the service answers a real request. `url` is the client address to record
    (default: the service's URL on 127.0.0.1:`port`); `timeout_s` defaults to the service's
    own start-up allowance. Raises InfraError when the port is taken, when the process exits,
    or when it does not answer in time (the process is stopped then). The process keeps
    running after this interpreter exits; call `.stop()` to end it.
    """
    spec = service_spec(spec) if isinstance(spec, str) else spec
    if port_in_use(port):
        raise InfraError(port_in_use_message(spec, port))
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    plan = spec.launch(port, directory)
    log_path = directory / LOG_FILE
    with open(log_path, "a", encoding="utf-8") as log:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        log.write(f"--- freshrec {stamp}: {' '.join(plan.argv)}\n")
    # The service outlives this interpreter, so its output goes through the rotating log
    # wrapper (logpipe.py), started as the group leader with the service as its child.
    record = spawn(wrapped(plan.argv, log_path), plan.environment(), directory,
                   directory / WRAPPER_LOG)
    record = replace(record, url=url or spec.url(LOOPBACK, port))
    write_pid_file(directory / PID_FILE, record)
    service = RunningService(spec=spec, directory=directory, record=record)
    try:
        wait_ready(service, timeout_s or spec.startup_timeout_s)
    except BaseException:
        service.stop()
        raise
    return service
