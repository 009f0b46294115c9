"""Small synthetic events for the features core (never real Criteo rows)."""

from __future__ import annotations

import random

import pytest

from stages.common.events import encode_event


def synthetic_row(rng: random.Random) -> bytes:
    """A valid Criteo-format row with random values and some missing cells."""
    label = b"1" if rng.random() < 0.25 else b"0"
    dense = [b"" if rng.random() < 0.2 else b"%d" % rng.randint(-3, 5000) for _ in range(13)]
    cats = [b"" if rng.random() < 0.15 else b"%08x" % rng.randint(0, 300) for _ in range(26)]
    return b"\t".join([label, *dense, *cats])


def synthetic_events(n: int, seed: int = 0, source: str = "unit") -> list[bytes]:
    """`n` encoded events with ids `<source>:<i>` and rows from `synthetic_row`."""
    rng = random.Random(seed)
    return [encode_event(f"{source}:{i}", 1_700_000_000_000 + i, synthetic_row(rng)) for i in range(n)]


@pytest.fixture()
def events() -> list[bytes]:
    return synthetic_events(40)
