"""The Prometheus endpoint every long-running stage serves on an opt-in loopback port.

One implementation of serving a stage's own `CollectorRegistry` on 127.0.0.1:`port` and of
stopping it; each stage supplies its registry, the error type of its stage and the variable
that names the port. `prometheus_client` is imported only when a port is set.
"""

from __future__ import annotations

import threading
from typing import Any

from stages.common.errors import FreshrecError, require


class MetricsEndpoint:
    """`/metrics` of one registry on 127.0.0.1 (`serve`), until `close` (idempotent)."""

    def __init__(self, registry: Any, what: str, port_variable: str,
                 error: type[FreshrecError], extra: str) -> None:
        self.registry = registry
        self._what = what
        self._port_variable = port_variable
        self._error = error
        self._extra = extra
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def serve(self, port: int) -> None:
        """Start serving; the stage's error, naming the variable, when the port is taken."""
        prom: Any = require("prometheus_client", self._extra)
        try:
            self._server, self._thread = prom.start_http_server(
                port, addr="127.0.0.1", registry=self.registry
            )
        except OSError as exc:
            raise self._error(
                f"cannot serve {self._what} metrics on 127.0.0.1:{port} ({exc}): free the port "
                f"or set another {self._port_variable}"
            ) from None

    def close(self) -> None:
        """Stop serving and close the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
