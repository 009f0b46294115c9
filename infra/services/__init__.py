"""The embedded default services: a Kafka-protocol broker, redis-server, MLflow and Prefect.

High level (`freshrec infra up|down|status`): `up`, `down`, `status` over the services of one
state directory. Low level (the pytest fixtures): `start_service` starts one service on a given
port and directory and returns a handle with `.url` and `.stop()`.

Importing this package starts nothing and imports no service client.
"""

from __future__ import annotations

from infra.services.base import LaunchPlan, ServiceSpec
from infra.services.catalog import SERVICE_NAMES, service_spec, service_specs
from infra.services.embedded import RunningService, start_service
from infra.services.manager import (
    Progress,
    ServiceStatus,
    UpOptions,
    down,
    services_dir,
    status,
    up,
)
from infra.services.ports import free_port, port_in_use

__all__ = [
    "SERVICE_NAMES",
    "LaunchPlan",
    "Progress",
    "RunningService",
    "ServiceSpec",
    "ServiceStatus",
    "UpOptions",
    "down",
    "free_port",
    "port_in_use",
    "service_spec",
    "service_specs",
    "services_dir",
    "start_service",
    "status",
    "up",
]
