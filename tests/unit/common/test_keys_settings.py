import pytest

from stages.common import keys
from stages.common.errors import ConfigError
from stages.common.settings import CommonSettings, kafka_client_config, load_settings


def test_key_layout_exact_bytes() -> None:
    assert keys.samples_stream("default") == b"freshrec:v1:{default}:samples"
    assert keys.samples_seq("a.b") == b"freshrec:v1:{a.b}:samples:seq"
    assert keys.offsets("n", "freshrec.events") == b"freshrec:v1:{n}:offsets:freshrec.events"
    assert keys.counters("n") == b"freshrec:v1:{n}:counters"
    assert keys.stats("n") == b"freshrec:v1:{n}:stats"
    assert keys.stats_version("n") == b"freshrec:v1:{n}:stats:version"
    assert keys.store_epoch("n") == b"freshrec:v1:{n}:epoch"
    assert keys.gaps("n") == b"freshrec:v1:{n}:gaps"
    with pytest.raises(ValueError, match="bad Redis namespace"):
        keys.samples_stream("has space")


def test_defaults_and_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_REDIS_URL", "redis://10.0.0.5:6380/1")
    settings = load_settings(CommonSettings)
    assert settings.redis_url == "redis://10.0.0.5:6380/1"
    assert settings.is_explicit("redis_url") and not settings.is_explicit("kafka_bootstrap")
    assert settings.checkpoints == settings.state_dir / "checkpoints"


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("FRESHREC_REDIS_URL", "localhost", "FRESHREC_REDIS_URL: the Redis URL must look like"),
        ("FRESHREC_KAFKA_BOOTSTRAP", "host:99999", "FRESHREC_KAFKA_BOOTSTRAP: 'host:99999' is not"),
        ("PREFECT_API_URL", "ftp://x", "PREFECT_API_URL: the Prefect API URL must look like"),
        ("FRESHREC_TOPIC_PARTITIONS", "0", "FRESHREC_TOPIC_PARTITIONS: Input should be greater"),
    ],
)
def test_bad_settings_give_one_line(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings(CommonSettings)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_secrets_are_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("FRESHREC_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FRESHREC_KAFKA_SASL_MECHANISM", "PLAIN")
    settings = load_settings(CommonSettings)
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    assert kafka_client_config(settings)["sasl.password"] == "hunter2"
