"""A deterministic generator of Criteo-shaped click events, for the demo and the benchmarks.

Every row is a pure function of (config, position): the random numbers come from a counter-based
hash (splitmix64 of seed and position), not from a stateful RNG, so

    generate_rows(c, s, n) == generate_rows(c, s, k) + generate_rows(c, s + k, n - k)

row for row, any position can be regenerated on its own (see `randomness` for the limits of
bit-exactness across machines), and the generator is vectorised with NumPy (about 280,000 rows
per CPU-second on this machine).

The world it simulates (all parameters are fields of `SyntheticConfig`):

- Time: row `p` happens at `start_time_ms + p * 1000 / events_per_s` (simulated time `t`, in
  seconds, is `p / events_per_s`). Every drift below is a function of `t`.
- Categorical fields C1..C26: field f draws a popularity rank `r` in 1..cardinalities[f] from a
  bounded Zipf (power-law) distribution with exponent `zipf_exponent`. For fields with at least
  1,000 ids ("large" fields) two things make new ids keep arriving:
  * the ranking shifts: the id at rank r is id number `r + floor(t * id_shift_per_s)`, so every
    1/id_shift_per_s seconds the most popular id retires and a never-seen id enters the tail;
  * with probability `new_id_rate` a value is a brand-new one-off id (never seen again).
  Small fields (fewer than 1,000 ids) keep a fixed vocabulary. An id is written as 8 lowercase
  hex digits derived from a hash of (seed, field, id number).
- Dense fields I1..I13: log-normal-like counts (a logistic variate mapped through expm1 with a
  per-field location and scale), clipped to 0..999,999; I2 is shifted by -2 so it can be
  negative, as in Criteo.
- Missing values: field f is empty with probability `missing_rate * m_f`, where m_f in [0, 2] is
  a fixed per-field factor (so the mean rate over fields is about `missing_rate`); the label is
  never missing.
- Labels: a hidden logistic click model. Every id has two fixed weights a, b (uniform, variance
  1) and every dense field has two (a_j, b_j). At time t the weight is
  `cos(theta) * a + sin(theta) * b` with `theta = (pi / 2) * t / drift_period_s`: after
  `drift_period_s` seconds the weights are uncorrelated with those at t = 0, so a model that
  stops learning gets steadily worse. The logit is
  `bias + sum_f s_f * w_f(id) + sum_j s_j * w_j * z_j` over the present fields (z_j is the
  standardised latent of dense field j); per-field scales s_f are fixed, normalised so that the
  logit's standard deviation is about `logit_std`, with a `dense_share` of its variance from the
  dense fields. `bias` is chosen so that the mean click rate is about `base_click_rate`.
  The label is 1 with probability sigmoid(logit); `SyntheticChunk.click_prob` holds it, so a
  benchmark can compare a model against the best possible AUC.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from stages.common.errors import ConfigError
from stages.ingest.core.randomness import (
    M16,
    M32,
    SQRT3,
    fixed_uniforms,
    mix,
    ordered_dot,
    signed_unit,
    uniform,
    zipf_ranks,
)
from stages.ingest.core.rowformat import DENSE_LIMIT, N_CATS, N_DENSE, format_rows

# Criteo-like cardinalities (the Kaggle set's per-field counts, the largest capped at 10**6).
DEFAULT_CARDINALITIES: tuple[int, ...] = (
    1460, 583, 1_000_000, 500_000, 305, 24, 12517, 633, 3, 93145, 5683, 1_000_000, 3194,
    27, 14992, 500_000, 10, 5652, 2173, 4, 1_000_000, 18, 15, 286181, 105, 142572,
)  # fmt: skip
LARGE_FIELD = 1000  # fields with at least this many ids get shifting rankings and one-off ids
_STREAMS = 64  # hash streams per row: 0..25 categorical, 26..38 dense, 39 label
_ONE_OFF_BASE = np.uint64(1 << 40)  # id numbers of one-off ids start here (ranks stay far below)
_BLOCK = 16384  # rows formatted at a time (bounds the temporary arrays to a few MB)


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the simulated world (see the module docstring for the model).

    seed: 0 <= seed < 2**63; everything is a function of it and the position.
    cardinalities: 26 ids counts, one per categorical field C1..C26 (each >= 1).
    zipf_exponent: exponent s > 0 of the popularity law P(rank r) ~ r**-s (1.1 is Criteo-like).
    new_id_rate: in [0, 1), the chance that a value of a large field is a one-off new id.
    id_shift_per_s: >= 0, how many ids per simulated second the popularity ranking of each large
        field moves by (0: a fixed vocabulary).
    drift_period_s: > 0, simulated seconds after which the hidden click weights are uncorrelated
        with the starting ones (math.inf: no drift).
    base_click_rate: in (0, 1), the approximate mean label.
    logit_std: >= 0, approximate standard deviation of the hidden logit (signal strength; 0 gives
        labels independent of the features).
    dense_share: in [0, 1], the share of the logit variance that comes from the dense fields.
    missing_rate: in [0, 0.5], mean probability that a feature field is empty.
    events_per_s: > 0, simulated events per second (sets event times and the speed of drift).
    start_time_ms: event time of position 0, milliseconds since the Unix epoch.
    """

    seed: int = 0
    cardinalities: tuple[int, ...] = DEFAULT_CARDINALITIES
    zipf_exponent: float = 1.1
    new_id_rate: float = 0.02
    id_shift_per_s: float = 1.0
    drift_period_s: float = 3600.0
    base_click_rate: float = 0.22
    logit_std: float = 1.6
    dense_share: float = 0.2
    missing_rate: float = 0.15
    events_per_s: float = 1000.0
    start_time_ms: int = 1_700_000_000_000

    def __post_init__(self) -> None:
        checks = [
            (0 <= self.seed < 2**63, "seed must be in [0, 2**63)"),
            (len(self.cardinalities) == N_CATS, f"cardinalities needs {N_CATS} values"),
            (all(c >= 1 for c in self.cardinalities), "every cardinality must be >= 1"),
            (all(c < 2**39 for c in self.cardinalities), "cardinalities must be < 2**39"),
            (self.zipf_exponent > 0, "zipf_exponent must be > 0"),
            (0 <= self.new_id_rate < 1, "new_id_rate must be in [0, 1)"),
            (self.id_shift_per_s >= 0, "id_shift_per_s must be >= 0"),
            (self.drift_period_s > 0, "drift_period_s must be > 0"),
            (0 < self.base_click_rate < 1, "base_click_rate must be in (0, 1)"),
            (self.logit_std >= 0, "logit_std must be >= 0"),
            (0 <= self.dense_share <= 1, "dense_share must be in [0, 1]"),
            (0 <= self.missing_rate <= 0.5, "missing_rate must be in [0, 0.5]"),
            (self.events_per_s > 0, "events_per_s must be > 0"),
            (self.start_time_ms >= 0, "start_time_ms must be >= 0"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ConfigError("synthetic generator: " + "; ".join(problems))

    def fingerprint(self) -> str:
        """8 hex digits that change whenever any parameter changes (part of the source tag)."""
        return hashlib.blake2b(repr(self).encode(), digest_size=4).hexdigest()


@dataclass(frozen=True)
class SyntheticChunk:
    """Rows start .. start+len-1 of the generator, in position order.

    rows: rows of the Criteo preset's layout (40 tab-separated fields, no line end), all valid.
    event_time_ms: int64[n], non-decreasing. labels: int8[n], the label written in each row.
    click_prob: float64[n], the hidden model's click probability of each row.
    """

    start: int
    rows: list[bytes]
    event_time_ms: npt.NDArray[np.int64]
    labels: npt.NDArray[np.int8]
    click_prob: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class _World:
    """Per-config constants, derived once per call (cheap: a few hundred numbers)."""

    card: npt.NDArray[np.float64]
    large: npt.NDArray[np.bool_]
    id_seed: npt.NDArray[np.uint64]
    cat_miss: npt.NDArray[np.float64]
    cat_scale: npt.NDArray[np.float64]
    dense_miss: npt.NDArray[np.float64]
    dense_loc: npt.NDArray[np.float64]
    dense_spread: npt.NDArray[np.float64]
    dense_a: npt.NDArray[np.float64]  # scaled weights (scale * unit variate) at theta = 0
    dense_b: npt.NDArray[np.float64]  # ... and at theta = pi / 2
    bias: float
    row_key: np.uint64 = field(default=np.uint64(0))


def _world(c: SyntheticConfig) -> _World:
    u = fixed_uniforms(c.seed, 1, 4 * N_CATS + 7 * N_DENSE)
    cat_miss = np.minimum(c.missing_rate * 2 * u[:N_CATS], 0.95)
    dense_miss = np.minimum(c.missing_rate * 2 * u[N_CATS : N_CATS + N_DENSE], 0.95)
    cat_imp = 0.2 + 0.8 * u[2 * N_CATS : 3 * N_CATS]
    dense_imp = 0.2 + 0.8 * u[3 * N_CATS : 3 * N_CATS + N_DENSE]
    var = c.logit_std**2
    cat_norm = float(np.sum(cat_imp**2 * (1 - cat_miss))) or 1.0
    dense_norm = float(np.sum(dense_imp**2 * (1 - dense_miss))) or 1.0
    rest = u[3 * N_CATS + N_DENSE :]
    p = c.base_click_rate
    dense_scale = dense_imp * math.sqrt(c.dense_share * var / dense_norm)
    with np.errstate(over="ignore"):
        id_seed = mix(np.uint64((c.seed * 131) % 2**64) + np.arange(N_CATS, dtype=np.uint64))
    return _World(
        card=np.asarray(c.cardinalities, dtype=np.float64),
        large=np.asarray(c.cardinalities) >= LARGE_FIELD,
        id_seed=id_seed << np.uint64(41),
        cat_miss=cat_miss,
        cat_scale=cat_imp * math.sqrt((1 - c.dense_share) * var / cat_norm),
        dense_miss=dense_miss,
        dense_loc=4.0 * rest[:N_DENSE],
        dense_spread=0.8 + 1.2 * rest[N_DENSE : 2 * N_DENSE],
        dense_a=dense_scale * SQRT3 * (2 * rest[2 * N_DENSE : 3 * N_DENSE] - 1),
        dense_b=dense_scale * SQRT3 * (2 * rest[3 * N_DENSE : 4 * N_DENSE] - 1),
        bias=math.log(p / (1 - p)) * math.sqrt(1 + math.pi * var / 8),
        row_key=np.uint64((c.seed * 0x5851F42D4C957F2D) % 2**64),
    )


def _block(c: SyntheticConfig, w: _World, start: int, n: int) -> SyntheticChunk:
    pos = np.arange(start, start + n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        keys = (pos * np.uint64(_STREAMS) + w.row_key)[:, None]
        h = mix(keys + np.arange(N_CATS + N_DENSE + 1, dtype=np.uint64))
    t_s = pos.astype(np.float64) / c.events_per_s
    theta = (math.pi / 2) * t_s / c.drift_period_s
    cos_t, sin_t = np.cos(theta), np.sin(theta)

    hc = h[:, :N_CATS]
    ranks = zipf_ranks(uniform(hc & M32, 2.0**32), w.card, c.zipf_exponent)
    shift = np.floor(t_s * c.id_shift_per_s).astype(np.uint64)[:, None]
    ids = np.where(w.large, ranks + shift, ranks)
    one_off = w.large & (uniform((hc >> np.uint64(48)) & M16, 65536.0) < c.new_id_rate)
    ids = np.where(one_off, _ONE_OFF_BASE + pos[:, None], ids)
    cat_missing = uniform((hc >> np.uint64(32)) & M16, 65536.0) < w.cat_miss
    with np.errstate(over="ignore"):
        idh = mix(ids + w.id_seed)
    cats = (idh & M32).astype(np.uint32)
    a = np.where(cat_missing, 0.0, signed_unit((idh >> np.uint64(32)) & M16))
    b = np.where(cat_missing, 0.0, signed_unit(idh >> np.uint64(48)))
    cat_logit = cos_t * ordered_dot(a, w.cat_scale) + sin_t * ordered_dot(b, w.cat_scale)

    hd = h[:, N_CATS : N_CATS + N_DENSE]
    ud = uniform(hd & M32, 2.0**32)
    z = np.log(ud / (1 - ud)) * (SQRT3 / math.pi)  # a logistic variate with variance 1
    dense_missing = uniform((hd >> np.uint64(32)) & M16, 65536.0) < w.dense_miss
    raw = np.expm1(np.clip(w.dense_loc + w.dense_spread * z, 0, math.log(DENSE_LIMIT + 1)))
    dense = np.minimum(np.floor(raw), DENSE_LIMIT).astype(np.int64)
    dense[:, 1] -= 2
    z = np.where(dense_missing, 0.0, z)
    dense_logit = cos_t * ordered_dot(z, w.dense_a) + sin_t * ordered_dot(z, w.dense_b)

    prob = 1.0 / (1.0 + np.exp(-(w.bias + cat_logit + dense_logit)))
    labels = (uniform(h[:, -1] & M32, 2.0**32) < prob).astype(np.int8)
    times = c.start_time_ms + np.floor(t_s * 1000.0).astype(np.int64)
    rows = format_rows(labels, dense, dense_missing, cats, cat_missing)
    return SyntheticChunk(start, rows, times, labels, prob)


def generate_rows(config: SyntheticConfig, start: int, count: int) -> SyntheticChunk:
    """Rows `start .. start+count-1` of the stream defined by `config` (pure, deterministic).

    Equal to the concatenation of any split of the same range into smaller calls.
    Raises ConfigError for a negative start or count.
    """
    if start < 0 or count < 0 or start + count > 2**40:
        raise ConfigError(f"synthetic rows need 0 <= start, count, start+count <= 2**40; got "
                          f"start={start}, count={count}")
    world = _world(config)
    parts = [
        _block(config, world, s, min(_BLOCK, start + count - s))
        for s in range(start, start + count, _BLOCK)
    ]
    if not parts:
        empty = np.empty(0, dtype=np.int64)
        return SyntheticChunk(start, [], empty, empty.astype(np.int8), empty.astype(np.float64))
    return SyntheticChunk(
        start=start,
        rows=[row for part in parts for row in part.rows],
        event_time_ms=np.concatenate([p.event_time_ms for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        click_prob=np.concatenate([p.click_prob for p in parts]),
    )


def synthetic_source_tag(config: SyntheticConfig) -> str:
    """The event-id source of a synthetic stream: `syn<seed>-<fingerprint>` (<= 32 chars)."""
    return f"syn{config.seed}-{config.fingerprint()}"
