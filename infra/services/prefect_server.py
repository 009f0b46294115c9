"""The Prefect server (API, UI and its background services) on SQLite, PREFECT_HOME in its dir."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

from infra.services.base import LaunchPlan, ServiceSpec, http_get, python_module
from infra.services.ports import LOOPBACK, Endpoint, url_endpoint
from stages.common.errors import InfraError, ServiceUnavailable
from stages.common.settings import CommonSettings


class PrefectServer(ServiceSpec):
    """`prefect server start` on 127.0.0.1; its client address ends in /api."""

    name = "prefect"
    setting = "prefect_api_url"
    env_var = "PREFECT_API_URL"
    label = "Prefect server"
    startup_timeout_s = 180.0

    def endpoint(self, settings: CommonSettings) -> Endpoint:
        parts = urlsplit(settings.prefect_api_url)
        if parts.scheme != "http" or parts.path.rstrip("/") != "/api":
            raise InfraError(
                "the embedded Prefect server serves http://HOST:PORT/api: "
                "set PREFECT_API_URL=http://127.0.0.1:PORT/api"
            )
        return url_endpoint(settings.prefect_api_url, 80, self.env_var)

    def url(self, host: str, port: int) -> str:
        return f"http://{host}:{port}/api"

    def launch(self, port: int, directory: Path) -> LaunchPlan:
        return LaunchPlan(
            argv=python_module(
                "prefect", "server", "start", "--host", LOOPBACK, "--port", str(port)
            ),
            env={
                # Profiles, the UI build and any server state stay in the service directory.
                "PREFECT_HOME": str(directory),
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": (
                    f"sqlite+aiosqlite:///{directory / 'prefect.db'}"
                ),
                "PREFECT_API_URL": self.url(LOOPBACK, port),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            },
        )

    def probe(self, url: str, settings: CommonSettings | None, timeout_s: float) -> str:
        base = url.rstrip("/")
        healthy = _json(http_get(f"{base}/health", timeout_s), f"{base}/health")
        if healthy is not True:
            raise ServiceUnavailable(f"GET {base}/health answered {healthy!r}, not true")
        version = _json(http_get(f"{base}/admin/version", timeout_s), f"{base}/admin/version")
        return f"Prefect {version}"


def _json(body: bytes, url: str) -> object:
    try:
        return json.loads(body)
    except ValueError:
        raise ServiceUnavailable(f"GET {url} answered something that is not JSON") from None
