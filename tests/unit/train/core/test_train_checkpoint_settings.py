from pathlib import Path

import pytest
from tests.unit.train.core.numpy_engine import NumpyLogisticEngine

from stages.common.errors import ConfigError, TrainError
from stages.common.schema import SchemaError, load_schema
from stages.common.settings import CommonSettings, load_settings
from stages.train.checkpoint import (
    ENGINE_DIR,
    STATE_FILE,
    Checkpoints,
    TrainerState,
    check_schema,
)
from stages.train.loop import run_trainer
from stages.train.core.positions import StorePosition
from stages.train.settings import TrainSettings


def _commit(ckpts: Checkpoints, window: int) -> Path:
    tmp = ckpts.begin(window)
    (tmp / ENGINE_DIR / "weights.bin").write_bytes(b"x" * window)
    state = TrainerState(window=window, samples=10 * window, store=StorePosition(f"{window}-0", window))
    return ckpts.commit(tmp, state)


def test_commit_latest_and_prune(tmp_path: Path) -> None:
    ckpts = Checkpoints(tmp_path, keep=2)
    assert ckpts.latest() is None
    for window in (3, 6, 9):
        _commit(ckpts, window)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ckpt-0000000006", "ckpt-0000000009"]
    path, state = ckpts.latest() or (None, None)
    assert path is not None and state is not None
    assert state.window == 9 and state.store == StorePosition("9-0", 9)
    assert (path / ENGINE_DIR / "weights.bin").read_bytes() == b"x" * 9


def test_half_written_checkpoint_is_ignored_then_cleaned(tmp_path: Path) -> None:
    ckpts = Checkpoints(tmp_path)
    _commit(ckpts, 2)
    tmp = ckpts.begin(4)  # killed before commit
    (tmp / ENGINE_DIR / "partial").write_bytes(b"?")
    latest = ckpts.latest()
    assert latest is not None and latest[1].window == 2
    ckpts.clean_stale()
    assert not tmp.exists()


def test_state_round_trip_and_run_id(tmp_path: Path) -> None:
    state = TrainerState(window=7, samples=70, replay_file="/x.tsv", replay_rows=9,
                         export_seq=3, last_full_seq=1, run_id="abc", world_size=2)
    assert TrainerState.from_json(state.to_json()) == state
    ckpts = Checkpoints(tmp_path)
    assert ckpts.read_run_id() is None
    ckpts.write_run_id("r1")
    assert ckpts.read_run_id() == "r1"


def test_unreadable_state_says_what_to_do(tmp_path: Path) -> None:
    bad = tmp_path / "ckpt-0000000001"
    bad.mkdir()
    (bad / STATE_FILE).write_text('{"version": 99}')
    with pytest.raises(TrainError, match="every checkpoint .* is damaged .*move them away"):
        Checkpoints(tmp_path).latest()


def test_a_truncated_checkpoint_falls_back_to_the_one_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpts = Checkpoints(tmp_path, keep=3)
    _commit(ckpts, 3)
    newest = _commit(ckpts, 6)
    weights = newest / ENGINE_DIR / "weights.bin"
    weights.write_bytes(weights.read_bytes()[:2])  # a crash or a full disk cut it short
    latest = ckpts.latest()
    assert latest is not None and latest[1].window == 3
    assert "ckpt-0000000006 is damaged (engine/weights.bin does not match its checksum" in (
        caplog.text.replace(str(tmp_path) + "/", ""))
    (tmp_path / "ckpt-0000000003" / ENGINE_DIR / "weights.bin").unlink()
    with pytest.raises(TrainError, match="weights.bin is missing"):
        ckpts.latest()


def test_one_trainer_per_checkpoint_directory(tmp_path: Path) -> None:
    first, second = Checkpoints(tmp_path), Checkpoints(tmp_path)
    first.lock()
    with pytest.raises(TrainError, match=r"another trainer \(pid \d+\) uses the checkpoint"):
        second.lock()
    first.unlock()
    second.lock()
    second.unlock()


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_TRAIN_HIDDEN_UNITS", "64, 32")
    monkeypatch.setenv("FRESHREC_TRAIN_MODEL_TYPE", "dcn")
    monkeypatch.setenv("FRESHREC_TRAIN_WINDOW_SAMPLES", "500")
    monkeypatch.setenv("FRESHREC_TRAIN_PRIOR_CTR", "0.03")
    s = load_settings(TrainSettings)
    config = s.engine_config()
    assert config.prior_ctr == 0.03
    assert config.spec.hidden_units == (64, 32) and config.spec.cross_layers == 1
    assert s.window_policy().max_samples == 500
    assert s.window_policy(replay=True).max_seconds == float("inf")


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_TRAIN_WINDOW_SAMPLES", "0")
    with pytest.raises(ConfigError, match="FRESHREC_TRAIN_WINDOW_SAMPLES"):
        load_settings(TrainSettings)


def test_the_model_spec_is_the_schema_layout() -> None:
    s = TrainSettings(embedding_dim=8)
    criteo = s.model_spec(load_schema("criteo"))
    assert criteo.simple and criteo.schema_hash == load_schema("criteo").schema_hash
    assert (criteo.n_dense, criteo.n_fields, criteo.embedding_dim) == (13, 26, 8)
    shop = load_schema("ecommerce")
    spec = s.engine_config(shop).spec
    assert spec.schema_hash == shop.schema_hash and not spec.simple
    assert spec.embedding_dim == 8 and {g.dim for g in spec.groups} == {8, 4}


def test_a_checkpoint_of_another_schema_stops_the_trainer(tmp_path: Path) -> None:
    """A trainer restarted with another FRESHREC_SCHEMA on a checkpoint directory stops with
    SchemaError naming both schemas, before touching the engine or MLflow."""
    shop, criteo = load_schema("ecommerce"), load_schema("criteo")
    ckpts = Checkpoints(tmp_path / "ck")
    tmp = ckpts.begin(4)
    ckpts.commit(tmp, TrainerState(window=4, feature_schema=shop.schema_id))
    common = CommonSettings(checkpoint_dir=tmp_path / "ck", state_dir=tmp_path,
                            feature_schema="criteo")
    settings = TrainSettings(embedding_dim=4, hidden_units=(4,))
    with pytest.raises(SchemaError) as err:
        run_trainer(common, settings, engine_factory=NumpyLogisticEngine, out=lambda _: None)
    assert shop.schema_id in str(err.value) and criteo.schema_id in str(err.value)
    assert "FRESHREC_SCHEMA" in str(err.value)
    assert ckpts.latest() is not None  # nothing was started over
    check_schema(tmp, TrainerState(feature_schema=shop.schema_id), shop)  # the same: passes
    with pytest.raises(SchemaError, match=f"feature schema {criteo.schema_id}, .* {shop.schema_id}"):
        check_schema(tmp, TrainerState(), shop)  # written before schemas: Criteo's
    assert TrainerState.from_json(TrainerState(feature_schema="x@1").to_json()).feature_schema == "x@1"
