"""The MLflow tracking server with its model registry, on SQLite, serving artifacts itself.

Clients upload artifacts through the server (`--serve-artifacts`, MLflow's default), so they need
no access to the artifact directory. MLflow's job runner (huey consumers for GenAI jobs) is
switched off: freshrec uses none of it, and it adds seven processes and a /dev/shm directory.
"""

from __future__ import annotations

from pathlib import Path

from infra.services.base import LaunchPlan, ServiceSpec, http_get, python_module
from infra.services.ports import LOOPBACK, Endpoint, url_endpoint
from stages.common.errors import InfraError
from stages.common.settings import CommonSettings


class MlflowServer(ServiceSpec):
    """`mlflow server` with one uvicorn worker on 127.0.0.1."""

    name = "mlflow"
    setting = "mlflow_tracking_uri"
    env_var = "FRESHREC_MLFLOW_TRACKING_URI"
    label = "MLflow server"
    startup_timeout_s = 180.0

    def endpoint(self, settings: CommonSettings) -> Endpoint:
        if not settings.mlflow_tracking_uri.startswith("http://"):
            raise InfraError(
                "the embedded MLflow server speaks http: "
                "set FRESHREC_MLFLOW_TRACKING_URI=http://127.0.0.1:PORT"
            )
        return url_endpoint(settings.mlflow_tracking_uri, 80, self.env_var)

    def url(self, host: str, port: int) -> str:
        return f"http://{host}:{port}"

    def launch(self, port: int, directory: Path) -> LaunchPlan:
        return LaunchPlan(
            argv=python_module(
                "mlflow",
                "server",
                "--host",
                LOOPBACK,
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{directory / 'mlflow.db'}",
                "--artifacts-destination",
                (directory / "artifacts").as_uri(),
            ),
            env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )

    def probe(self, url: str, settings: CommonSettings | None, timeout_s: float) -> str:
        if not url.startswith(("http://", "https://")):
            return "local store, no server to check"
        headers = {}
        if settings is not None and settings.mlflow_token is not None:
            headers["Authorization"] = f"Bearer {settings.mlflow_token.get_secret_value()}"
        base = url.rstrip("/")
        http_get(f"{base}/health", timeout_s, headers)
        # Tracking store and model registry both answer: the server is usable, not only up.
        http_get(f"{base}/api/2.0/mlflow/experiments/search?max_results=1", timeout_s, headers)
        registry = f"{base}/api/2.0/mlflow/registered-models/search?max_results=1"
        http_get(registry, timeout_s, headers)
        version = http_get(f"{base}/version", timeout_s, headers).decode("utf-8", "replace")
        return f"MLflow {version.strip()}"
