"""Glue shared by every test: the Criteo sample files and a free-port helper.

TF_USE_LEGACY_KERAS is set here, before any test module can import TensorFlow, so that
`tf.keras` is Keras 2 (tf_keras) everywhere, as in the trainer.
"""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# Tests count windows: their checkpoints follow FRESHREC_TRAIN_CHECKPOINT_EVERY alone, not the
# 30-s floor between checkpoints, nor exports the 5-s one (tested in test_train_loop_store.py).
os.environ.setdefault("FRESHREC_TRAIN_CHECKPOINT_MIN_INTERVAL_S", "0")
os.environ.setdefault("FRESHREC_TRAIN_EXPORT_MIN_INTERVAL_S", "0")  # the same for exports

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from infra.services.ports import free_port  # noqa: E402

__all__ = ["CRITEO_DIR", "free_port"]

# Timing is not what hypothesis tests check here, and the 2-core CI box is often busy.
settings.register_profile(
    "freshrec", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=60
)
settings.load_profile("freshrec")

# The shared data lives beside the repository: /work/shared/data/criteo for /work/main.
CRITEO_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "criteo"


def _criteo_file(name: str) -> Path:
    path = CRITEO_DIR / name
    if not path.is_file():
        pytest.skip(f"Criteo sample {path} is absent: put the shared data at {CRITEO_DIR}")
    return path


@pytest.fixture(scope="session")
def criteo_sample() -> Path:
    """criteo_sample_10k.tsv.gz: 10,000 real Criteo rows, gzip TSV (label, 13 int, 26 cat)."""
    return _criteo_file("criteo_sample_10k.tsv.gz")


@pytest.fixture(scope="session")
def criteo_tiny() -> Path:
    """criteo_tiny.tsv: 1,000 real Criteo rows, plain TSV, for fast tests."""
    return _criteo_file("criteo_tiny.tsv")
