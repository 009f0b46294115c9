"""The session service fixtures give working services, and per-test names keep tests apart."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from stages.common.settings import CommonSettings

pytestmark = pytest.mark.integration


def test_kafka_broker_round_trips_a_message(
    kafka_broker: str, unique_name: Callable[..., str]
) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = unique_name("topic")
    admin = AdminClient({"bootstrap.servers": kafka_broker})
    for future in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        future.result(timeout=10)
    producer = Producer({"bootstrap.servers": kafka_broker})
    producer.produce(topic, key=b"k", value=b"hello")
    assert producer.flush(10) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_broker,
            "group.id": unique_name("group"),
            "auto.offset.reset": "earliest",
            # Tansu answers a group's first JoinGroup after half the session timeout
            # (22.5 s with librdkafka's default of 45 s).
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    try:
        message = None
        for _ in range(60):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                break
        assert message is not None and message.value() == b"hello"
    finally:
        consumer.close()


def test_redis_server_answers(redis_server: str, unique_name: Callable[..., str]) -> None:
    import redis

    client = redis.Redis.from_url(redis_server)
    key = unique_name("key")
    client.set(key, b"v", ex=60)
    assert client.get(key) == b"v"
    client.close()


def test_mlflow_server_tracks_uploads_and_registers(
    mlflow_server: str, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    experiment = client.create_experiment(unique_name("exp"))
    run = client.create_run(experiment)
    (tmp_path / "weights.txt").write_text("1 2 3")
    # Artifacts go through the server (mlflow-artifacts:), not to a path the client can see.
    client.log_artifact(run.info.run_id, str(tmp_path / "weights.txt"), "model")
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    listed = client.list_artifacts(run.info.run_id, "model")
    assert [f.path for f in listed] == ["model/weights.txt"]
    name = unique_name("model")
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    assert version.version == "1"


def test_prefect_server_accepts_a_flow(
    prefect_server: str, unique_name: Callable[..., str]
) -> None:
    name = unique_name("flow")
    request = urllib.request.Request(
        f"{prefect_server}/flows/",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201)
        assert json.loads(response.read())["name"] == name


def test_services_env_points_at_the_services_with_own_names(
    services_env: CommonSettings,
    make_settings: Callable[..., CommonSettings],
    kafka_broker: str,
    redis_server: str,
    mlflow_server: str,
    prefect_server: str,
) -> None:
    assert services_env.kafka_bootstrap == kafka_broker
    assert services_env.redis_url == redis_server
    assert services_env.mlflow_tracking_uri == mlflow_server
    assert services_env.prefect_api_url == prefect_server
    other = make_settings("redis")
    assert other.redis_url == redis_server
    assert other.redis_namespace != services_env.redis_namespace
    assert other.topic_events != services_env.topic_events
    assert other.model_name != services_env.model_name


def test_up_only_checks_services_configured_explicitly(services_env: CommonSettings) -> None:
    from infra.services import up

    statuses = up(services_env)
    assert [(s.embedded, s.pid, s.healthy) for s in statuses] == [(False, None, True)] * 4
    assert not (services_env.state_dir / "services" / "kafka" / "server.pid").exists()
