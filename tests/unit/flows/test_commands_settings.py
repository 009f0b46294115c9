"""`make demo` on a fresh machine: the settings the flow commands use must not count the default
Prefect address as one the user set (then `infra up` would skip the embedded Prefect server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows.commands import _point_prefect_at_settings
from stages.common.settings import CommonSettings, load_settings


def test_default_prefect_address_stays_embedded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(os.environ):
        if name.startswith(("FRESHREC_", "PREFECT_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env
    common = _point_prefect_at_settings()
    assert not common.is_explicit("prefect_api_url")
    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    # what the bug did: settings read after the export take the default as the user's
    assert load_settings(CommonSettings).is_explicit("prefect_api_url")


def test_a_users_prefect_address_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4999/api")
    common = _point_prefect_at_settings()
    assert common.is_explicit("prefect_api_url")
    assert common.prefect_api_url == os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4999/api"
