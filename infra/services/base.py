"""What every embedded service provides: where it listens, how to launch it, how to probe it."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from infra.services.ports import Endpoint, redact_url
from stages.common.errors import ServiceUnavailable
from stages.common.settings import CommonSettings


@dataclass(frozen=True)
class LaunchPlan:
    """The command line and extra environment that start one service."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        """This process's environment with the plan's variables on top."""
        return {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}


class ServiceSpec(ABC):
    """One kind of embedded service (Kafka broker, Redis, MLflow, Prefect).

    A spec holds no state about a running process; `infra.services.embedded` does that.
    """

    name: str  # short name: the sub-directory of <state_dir>/services and the CLI name
    setting: str  # the CommonSettings field with its address
    env_var: str  # the variable a user sets to point freshrec at their own service
    label: str  # what to call it in messages ("Redis server")
    startup_timeout_s: float  # how long a cold start may take on a small machine

    def configured_url(self, settings: CommonSettings) -> str:
        """The address clients use, as configured (a bootstrap list for Kafka, else a URL)."""
        return str(getattr(settings, self.setting))

    @abstractmethod
    def endpoint(self, settings: CommonSettings) -> Endpoint:
        """Host and port of the configured address (InfraError if it has none)."""

    @abstractmethod
    def url(self, host: str, port: int) -> str:
        """The client address of an embedded instance on `host:port`."""

    def client_url(self, url: str, directory: Path) -> str:
        """The address clients use for the instance in `directory` whose address is `url`,
        with any credentials the instance generated (the embedded Redis's password)."""
        return url

    @abstractmethod
    def launch(self, port: int, directory: Path) -> LaunchPlan:
        """How to start an instance on 127.0.0.1:`port` keeping its data under `directory`."""

    @abstractmethod
    def probe(self, url: str, settings: CommonSettings | None, timeout_s: float) -> str:
        """Send one real request to the service at `url`; return a short description.

        `settings` (when given) carries credentials for an external service. Raises
        ServiceUnavailable when the service does not answer correctly.
        """


def python_module(module: str, *args: str) -> tuple[str, ...]:
    """argv running `python -m module args` with this interpreter (the project's venv)."""
    return (sys.executable, "-m", module, *args)


def http_get(url: str, timeout_s: float, headers: Mapping[str, str] | None = None) -> bytes:
    """GET `url` and return the body; ServiceUnavailable unless the answer is 200."""
    shown = redact_url(url)
    request = urllib.request.Request(url, headers=dict(headers or {}), method="GET")
    # An HTTP(S)_PROXY from the environment must not intercept requests to this machine.
    local = urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if local else None
    try:
        with (opener.open if opener else urllib.request.urlopen)(
            request, timeout=timeout_s
        ) as response:
            body: bytes = response.read()
            if response.status != 200:
                raise ServiceUnavailable(f"GET {shown} answered HTTP {response.status}")
            return body
    except urllib.error.HTTPError as exc:
        raise ServiceUnavailable(f"GET {shown} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServiceUnavailable(f"GET {shown} failed: {reason}") from None
