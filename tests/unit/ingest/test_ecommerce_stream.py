"""The ecommerce event stream: valid JSON lines of the preset, determinism, a learnable click
model (a hashed logistic regression beats the base rate) and drift (a frozen model goes stale)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import orjson
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.common.errors import ConfigError
from stages.common.layout import Transform, compile_layout
from stages.common.metrics import auc
from stages.common.rows import RowParser
from stages.common.schema import load_schema
from stages.ingest.core.ecommerce import (
    CATEGORIES,
    DEVICES,
    EcommerceChunk,
    EcommerceConfig,
    EcommerceStream,
    ecommerce_source_tag,
)

CONFIG = EcommerceConfig(seed=3)
DAY_EVENTS = int(24 * 3600 * CONFIG.events_per_s)  # the seq of the event one simulated day on
Model = Callable[[sp.csr_matrix], npt.NDArray[np.float64]]


@pytest.fixture(scope="module")
def stream() -> EcommerceStream:
    return EcommerceStream(CONFIG, "web-1")


@pytest.fixture(scope="module")
def hour0(stream: EcommerceStream) -> EcommerceChunk:
    return stream.chunk(0, 50_000)


@pytest.fixture(scope="module")
def hour24(stream: EcommerceStream) -> EcommerceChunk:
    return stream.chunk(DAY_EVENTS, 50_000)


def test_every_line_is_a_valid_event_of_the_preset(hour0: EcommerceChunk) -> None:
    rows = hour0.rows[:5000]
    assert not any(b"\n" in r or b"\t" in r or b"\r" in r for r in rows)
    parsed = RowParser.for_schema(load_schema("ecommerce")).parse(rows)
    assert parsed.bad == []
    np.testing.assert_array_equal(parsed.raw.label, hour0.labels[:5000])
    np.testing.assert_array_equal(parsed.event_time_ms, hour0.event_time_ms[:5000])
    assert parsed.event_ids[:3] == ["web-1:0", "web-1:1", "web-1:2"]
    events = [orjson.loads(r) for r in rows]
    recent = [len(e["user"]["recent_items"]) for e in events]
    assert max(recent) == 5 and min(recent) == 0  # new users have shorter lists
    assert {e["item"]["category"] for e in events} <= set(CATEGORIES)
    assert {e["device"] for e in events} == set(DEVICES)
    assert {e["hour"] for e in events} == set(range(24))  # local hours of users in many zones
    assert all(isinstance(e["item"]["price"], float) and e["item"]["price"] > 0 for e in events)
    assert all(i.startswith("i") for e in events for i in e["user"]["recent_items"])


def test_click_rate_is_a_few_percent(hour0: EcommerceChunk) -> None:
    assert 0.03 < hour0.labels.mean() < 0.10
    assert abs(hour0.click_prob.mean() - CONFIG.base_ctr) < 0.01


def test_deterministic_for_a_seed_and_source(stream: EcommerceStream) -> None:
    again = EcommerceStream(CONFIG, "web-1")
    assert again.batch(1000, 300) == stream.batch(1000, 300)
    other = EcommerceStream(dataclasses.replace(CONFIG, seed=4), "web-1")
    assert other.batch(1000, 300) != stream.batch(1000, 300)
    assert EcommerceStream(CONFIG, "web-2").batch(0, 1)[0].startswith(b'{"event_id":"web-2:0"')


@settings(max_examples=10, deadline=None)
@given(start=st.integers(0, 10**9), sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=3))
def test_any_split_gives_the_same_events(
    stream: EcommerceStream, start: int, sizes: list[int]
) -> None:
    whole = stream.chunk(start, sum(sizes))
    parts, pos = [], start
    for size in sizes:
        parts.append(stream.chunk(pos, size))
        pos += size
    assert whole.rows == [row for part in parts for row in part.rows]


def test_times_are_simulated_unless_now_is_given(stream: EcommerceStream) -> None:
    chunk = stream.chunk(2000, 10)
    assert chunk.event_time_ms[0] == CONFIG.start_ms + 2000  # 1,000 events per simulated second
    now = stream.chunk(2000, 3, now_ms=1_800_000_000_000)
    assert [orjson.loads(r)["ts"] for r in now.rows] == [1_800_000_000_000] * 3


def test_bad_config_and_range_say_what_is_wrong(stream: EcommerceStream) -> None:
    with pytest.raises(ConfigError, match="base_ctr must be in"):
        EcommerceConfig(base_ctr=1.5)
    with pytest.raises(ConfigError, match="latent_dim must be even"):
        EcommerceConfig(latent_dim=3)
    with pytest.raises(ConfigError, match="0 <= first_seq"):
        stream.batch(-1, 10)
    assert ecommerce_source_tag(CONFIG).startswith("ecom3-")


def _hashed(rows: list[bytes]) -> tuple[sp.csr_matrix, npt.NDArray[np.int8]]:
    """The preset's feature ids (the features stage's transform), hashed into 2**18 columns."""
    schema = load_schema("ecommerce")
    parsed = RowParser.for_schema(schema).parse(rows)
    ids = Transform(schema, compile_layout(schema, 8)).ids(parsed.raw)
    n, k = ids.shape
    cols = (ids % np.uint64(1 << 18)).astype(np.int64).ravel()
    x = sp.csr_matrix((np.ones(n * k), cols, np.arange(0, n * k + 1, k)), shape=(n, 1 << 18))
    return x, parsed.raw.label


def _logistic(x: sp.csr_matrix, y: npt.NDArray[np.int8]) -> Model:
    """A logistic regression by full-batch AdaGrad with an L2 penalty (40 steps)."""
    w, g2 = np.zeros(x.shape[1]), np.full(x.shape[1], 1e-8)
    b = float(np.log(y.mean() / (1 - y.mean())))
    for _ in range(40):
        p = 1 / (1 + np.exp(-(x @ w + b)))
        g = x.T @ (p - y) / len(y) + 3e-4 * w
        g2 += g * g
        w -= 0.3 * g / np.sqrt(g2)
        b -= 0.3 * float(np.mean(p - y))
    return lambda z: z @ w + b  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def hashed0(hour0: EcommerceChunk) -> tuple[sp.csr_matrix, npt.NDArray[np.int8]]:
    return _hashed(hour0.rows)


def test_a_hashed_logistic_regression_learns_the_clicks(
    hashed0: tuple[sp.csr_matrix, npt.NDArray[np.int8]]
) -> None:
    x, y = hashed0
    model = _logistic(x[:40_000], y[:40_000])
    assert auc(y[40_000:], model(x[40_000:])) > 0.65


def test_the_click_model_drifts_and_a_frozen_model_goes_stale(
    stream: EcommerceStream,
    hashed0: tuple[sp.csr_matrix, npt.NDArray[np.int8]],
    hour24: EcommerceChunk,
) -> None:
    # The same events' click logits one day apart (same local hours): clearly different.
    events = stream.events(0, 20_000)
    p0, p24 = (stream.click_prob(events, CONFIG.start_ms + h * 3_600_000) for h in (0, 24))
    assert np.corrcoef(np.log(p0 / (1 - p0)), np.log(p24 / (1 - p24)))[0, 1] < 0.8
    x0, y0 = hashed0
    x24, y24 = _hashed(hour24.rows)
    frozen = _logistic(x0[:40_000], y0[:40_000])
    fresh = _logistic(x24[:40_000], y24[:40_000])
    frozen_then = auc(y0[40_000:], frozen(x0[40_000:]))
    frozen_now, fresh_now = (auc(y24[40_000:], m(x24[40_000:])) for m in (frozen, fresh))
    assert frozen_now < frozen_then - 0.04
    assert fresh_now > frozen_now + 0.04
