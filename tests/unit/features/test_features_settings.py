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
