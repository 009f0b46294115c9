"""Addresses of the embedded services: free ports, port-in-use checks, parsing settings values."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from stages.common.errors import InfraError
from stages.common.settings import redact_url

# Embedded services bind here and nowhere else.
LOOPBACK = "127.0.0.1"
# Host names a client may use for a service bound to 127.0.0.1.
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost"})


@dataclass(frozen=True)
class Endpoint:
    """A host and a TCP port, as read from one setting."""

    host: str
    port: int


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """True when `host:port` cannot be bound, i.e. something already listens there.

    SO_REUSEADDR is set as the servers themselves do, so sockets in TIME_WAIT left by an
    earlier run do not count as "in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def accepts_connections(endpoint: Endpoint, timeout: float) -> bool:
    """True when a TCP connection to `endpoint` succeeds within `timeout` seconds."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout):
            return True
    except OSError:
        return False


def bootstrap_endpoint(bootstrap: str) -> Endpoint:
    """The first HOST:PORT of a Kafka bootstrap list ("127.0.0.1:9092,other:9092")."""
    first = bootstrap.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InfraError(f"{first!r} is not HOST:PORT: fix FRESHREC_KAFKA_BOOTSTRAP")
    return Endpoint(host.strip("[]"), int(port))


def url_endpoint(url: str, default_port: int, env_var: str) -> Endpoint:
    """Host and port of a URL (`default_port` when the URL names none)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise InfraError(f"{url!r} has a bad port: fix {env_var}") from None
    if not parts.hostname:
        raise InfraError(f"{url!r} names no host: fix {env_var}")
    return Endpoint(parts.hostname, port or default_port)


def require_loopback(endpoint: Endpoint, env_var: str) -> None:
    """Raise InfraError unless `endpoint` is an address an embedded service can serve."""
    if endpoint.host not in _LOOPBACK_NAMES:
        raise InfraError(
            f"embedded services listen on {LOOPBACK} only, but {env_var} names "
            f"{endpoint.host}: use 127.0.0.1 or localhost, or run that service yourself"
        )
