"""The four embedded services, in the order they are listed and started."""

from __future__ import annotations

from infra.services.base import ServiceSpec
from infra.services.kafka_broker import KafkaBroker
from infra.services.mlflow_server import MlflowServer
from infra.services.prefect_server import PrefectServer
from infra.services.redis_server import RedisServer
from stages.common.errors import InfraError

SERVICE_NAMES: tuple[str, ...] = ("kafka", "redis", "mlflow", "prefect")


def service_specs(redis_persist: bool = False) -> list[ServiceSpec]:
    """One spec per embedded service, in SERVICE_NAMES order."""
    return [KafkaBroker(), RedisServer(persist=redis_persist), MlflowServer(), PrefectServer()]


def service_spec(name: str) -> ServiceSpec:
    """The spec called `name` (one of SERVICE_NAMES); InfraError for any other name."""
    for spec in service_specs():
        if spec.name == name:
            return spec
    raise InfraError(
        f"no embedded service is called {name!r}: use one of {', '.join(SERVICE_NAMES)}"
    )
