"""`freshrec infra up|down|status` as functions over the four services of one state directory.

A service whose address the user configured (`settings.is_explicit`) is external: freshrec only
checks it. The others are embedded: `up` starts them under <state_dir>/services/<name>/ and
`down` stops exactly the processes `up` started (read from the pid files there).
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from infra.services.base import ServiceSpec
from infra.services.catalog import SERVICE_NAMES, service_specs
from infra.services.embedded import (
    RunningService,
    attach,
    port_in_use_message,
    start_service,
    wait_ready,
)
from infra.services.ports import accepts_connections, port_in_use, redact_url, require_loopback
from infra.services.process import PID_FILE, read_pid_file, remove_pid_file, stop_group
from stages.common.errors import FreshrecError, InfraError, ServiceUnavailable
from stages.common.settings import CommonSettings

Progress = Callable[[str, str], None]
"""Called as progress(service_name, message) while `up` or `down` works."""

_STATUS_PROBE_S = 3.0


@dataclass(frozen=True)
class ServiceStatus:
    """One service as `status` sees it. `url` never shows a password."""

    name: str
    url: str
    embedded: bool  # True: freshrec starts and stops it; False: the user runs it
    pid: int | None  # the embedded process, when it runs
    healthy: bool  # it answered a real request just now
    detail: str  # version, start-up time, or what is wrong and what to do


@dataclass(frozen=True)
class UpOptions:
    """How `up` behaves."""

    embed: frozenset[str] = frozenset()  # start these even though their address is explicit
    timeout_s: float | None = None  # start-up allowance per service; None: each its own
    redis_persist: bool = False  # keep an RDB snapshot of the embedded Redis across restarts


def services_dir(settings: CommonSettings) -> Path:
    """Where the embedded services keep data, logs and pid files: <state_dir>/services."""
    return settings.state_dir / "services"


@contextmanager
def _locked(settings: CommonSettings) -> Iterator[None]:
    # Two `up`s at once would both find a port free and start two servers.
    root = services_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _status(
    spec: ServiceSpec, url: str, embedded: bool, pid: int | None, ok: bool, detail: str
) -> ServiceStatus:
    return ServiceStatus(spec.name, redact_url(url), embedded, pid, ok, detail)


def _external(spec: ServiceSpec, settings: CommonSettings, timeout_s: float) -> ServiceStatus:
    url = spec.configured_url(settings)
    try:
        return _status(spec, url, False, None, True, spec.probe(url, settings, timeout_s))
    except ServiceUnavailable as exc:
        hint = f"start it, or unset {spec.env_var} to use the embedded one"
        return _status(spec, url, False, None, False, f"{exc}: {hint}")


def _is_external(spec: ServiceSpec, settings: CommonSettings, embed: frozenset[str]) -> bool:
    embedded = embed | settings.embed
    return settings.is_explicit(spec.setting) and spec.name not in embedded


def _parallel(
    tasks: list[Callable[[], ServiceStatus]], specs: list[ServiceSpec], settings: CommonSettings
) -> list[ServiceStatus]:
    def guarded(task: Callable[[], ServiceStatus], spec: ServiceSpec) -> ServiceStatus:
        try:
            return task()
        except FreshrecError as exc:
            url = spec.configured_url(settings)
            external = _is_external(spec, settings, frozenset())
            return _status(spec, url, not external, None, False, str(exc))

    with ThreadPoolExecutor(max_workers=max(1, len(tasks))) as pool:
        return list(pool.map(guarded, tasks, specs))


def _plan_up(
    spec: ServiceSpec, settings: CommonSettings, options: UpOptions, notify: Progress
) -> Callable[[], ServiceStatus]:
    """Check what can be checked at once (ports, stale pid files); return the slow part."""
    url = spec.configured_url(settings)
    directory = services_dir(settings) / spec.name
    running = attach(spec, directory, clean_stale=True)
    timeout_s = options.timeout_s or spec.startup_timeout_s
    if running is not None:
        if running.address != url:
            raise InfraError(
                f"the embedded {spec.name} runs at {running.address}, not at {redact_url(url)}: "
                "run `freshrec infra down` first"
            )
        return lambda: _check_running(running, timeout_s, notify)
    if _is_external(spec, settings, options.embed):
        return lambda: _check_external(spec, settings, notify)
    endpoint = spec.endpoint(settings)
    require_loopback(endpoint, spec.env_var)
    if port_in_use(endpoint.port):
        raise InfraError(port_in_use_message(spec, endpoint.port))
    return lambda: _start(spec, endpoint.port, directory, url, timeout_s, notify)


def _check_external(spec: ServiceSpec, settings: CommonSettings, notify: Progress) -> ServiceStatus:
    result = _external(spec, settings, timeout_s=5.0)
    notify(spec.name, f"external at {result.url}: {'healthy' if result.healthy else 'NOT healthy'}")
    return result


def _check_running(service: RunningService, timeout_s: float, notify: Progress) -> ServiceStatus:
    detail = wait_ready(service, timeout_s)
    notify(service.name, f"already running (pid {service.pid})")
    return _status(
        service.spec, service.address, True, service.pid, True, f"already running; {detail}"
    )


def _start(
    spec: ServiceSpec, port: int, directory: Path, url: str, timeout_s: float, notify: Progress
) -> ServiceStatus:
    notify(spec.name, f"starting at {redact_url(url)}")
    began = time.monotonic()
    service = start_service(spec, port, directory, url=url, timeout_s=timeout_s)
    took = time.monotonic() - began
    notify(spec.name, f"ready in {took:.1f} s")
    return _status(spec, url, True, service.pid, True, f"started in {took:.1f} s")


def up(
    settings: CommonSettings, options: UpOptions = UpOptions(), progress: Progress | None = None
) -> list[ServiceStatus]:
    """Start every embedded service that does not run yet; check the external ones.

    Idempotent: a service already running from its pid file is left as it is. Services start
    in parallel; the call returns when each answers a real request. Returns one status per
    service in SERVICE_NAMES order. Raises InfraError (one line) when a port is taken by
    another process (before anything starts) or when any service is not healthy at the end;
    services that did start keep running.
    """
    unknown = options.embed - set(SERVICE_NAMES)
    if unknown:
        raise InfraError(f"unknown service {sorted(unknown)[0]!r}: use {', '.join(SERVICE_NAMES)}")
    notify = progress or (lambda name, message: None)
    specs = service_specs(options.redis_persist)
    with _locked(settings):
        tasks = [_plan_up(spec, settings, options, notify) for spec in specs]
        statuses = _parallel(tasks, specs, settings)
    failures = [f"{s.name}: {s.detail}" for s in statuses if not s.healthy]
    if failures:
        raise InfraError("; ".join(failures))
    return statuses


def _stop_one(name: str, directory: Path, grace_s: float, notify: Progress) -> bool:
    record = read_pid_file(directory / PID_FILE)
    if record is None:
        return False
    count = stop_group(record, grace_s)
    remove_pid_file(directory / PID_FILE)
    notify(name, f"stopped pid {record.pid} ({count} process(es))" if count else "was not running")
    return count > 0


def down(
    settings: CommonSettings, grace_s: float = 10.0, progress: Progress | None = None
) -> list[str]:
    """Stop the services `up` started in this state directory; return the names stopped.

    Each gets SIGTERM, then SIGKILL after `grace_s` seconds, with all its child processes.
    External services and processes freshrec did not start are never touched.
    """
    notify = progress or (lambda name, message: None)
    root = services_dir(settings)
    if not root.is_dir():
        return []
    with _locked(settings):
        with ThreadPoolExecutor(max_workers=len(SERVICE_NAMES)) as pool:
            stopped = list(
                pool.map(lambda n: _stop_one(n, root / n, grace_s, notify), SERVICE_NAMES)
            )
    return [name for name, done in zip(SERVICE_NAMES, stopped) if done]


def _status_one(spec: ServiceSpec, settings: CommonSettings) -> ServiceStatus:
    url = spec.configured_url(settings)
    running = attach(spec, services_dir(settings) / spec.name)
    if running is not None and running.address == url:
        try:
            detail = spec.probe(running.url, None, _STATUS_PROBE_S)
            return _status(spec, url, True, running.pid, True, detail)
        except ServiceUnavailable as exc:
            return _status(spec, url, True, running.pid, False, f"{exc}: see {running.log_path}")
    if _is_external(spec, settings, frozenset()):
        return _external(spec, settings, _STATUS_PROBE_S)
    if running is not None:
        where = redact_url(running.address)
        detail = f"freshrec's runs at {where}: run `freshrec infra down`, then `up`"
        return _status(spec, url, True, running.pid, False, detail)
    if accepts_connections(spec.endpoint(settings), 0.5):
        try:
            detail = spec.probe(url, None, _STATUS_PROBE_S)
            return _status(spec, url, False, None, True, f"not started by freshrec; {detail}")
        except ServiceUnavailable as exc:
            return _status(spec, url, False, None, False, f"not started by freshrec; {exc}")
    return _status(spec, url, True, None, False, "not running: start it with `freshrec infra up`")


def status(settings: CommonSettings) -> list[ServiceStatus]:
    """Check every service now (in parallel); one status each, in SERVICE_NAMES order."""
    specs = service_specs()
    return _parallel([partial(_status_one, spec, settings) for spec in specs], specs, settings)
