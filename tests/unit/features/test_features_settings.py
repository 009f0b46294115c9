import pytest

from stages.common.errors import ConfigError
from stages.common.settings import load_settings
from stages.features.settings import FeaturesSettings


def test_env_prefix_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_FEATURES_GROUP", "g1")
    monkeypatch.setenv("FRESHREC_FEATURES_BATCH_MAX", "123")
    settings = load_settings(FeaturesSettings)
    assert settings.group == "g1" and settings.batch_max == 123
    assert settings.session_timeout_s == 6.0 and settings.dlq_topic == "freshrec.samples.dlq"
    assert settings.consumer == "batch" and not settings.web_enabled


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_FEATURES_BATCH_MAX", "0")
    with pytest.raises(ConfigError, match="FRESHREC_FEATURES_BATCH_MAX"):
        load_settings(FeaturesSettings)


def test_retention_by_bytes_default_env_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(FeaturesSettings)
    # A quarter of the embedded Redis's maxmemory (1gb): see the field's description.
    assert settings.retention_mb == 256 and settings.retention_blocks == 20_000
    monkeypatch.setenv("FRESHREC_FEATURES_RETENTION_MB", "64")
    assert load_settings(FeaturesSettings).retention_mb == 64
    monkeypatch.setenv("FRESHREC_FEATURES_RETENTION_MB", "0")
    with pytest.raises(ConfigError, match="FRESHREC_FEATURES_RETENTION_MB"):
        load_settings(FeaturesSettings)
