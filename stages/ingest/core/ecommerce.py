"""A deterministic stream of shop click events for the `ecommerce` preset (pure NumPy, no I/O).

Each event is one JSON line of `stages/common/presets/ecommerce.yaml`:

    {"event_id":"<source>:<seq>","ts":<ms>,"click":0|1,
     "user":{"id":"u12","recent_items":["i7","i93"]},
     "item":{"id":"i512","category":"shoes","price":39.90},"device":"mobile","hour":21}

Event `seq` is a pure function of (config, seq) (counter-based hashes, like `synthetic`), so any
split of a range gives the same events; `ts` is simulated (`start_ms + seq * 1000 /
events_per_s`) unless the caller passes `now_ms`, and everything time-dependent follows `ts`.

The world (tables drawn once from the seed):
- users 1..n_users, drawn by a bounded Zipf law (`user_zipf`); each has a latent vector, a time
  zone (`hour` is the user's local hour of `ts`), a main device (used 80% of the time), a price
  sensitivity, three favourite categories (the best of latent . category vector) and a history
  length (0..5 at the start, one more per simulated hour: new users have short lists);
- items 1..n_items, drawn by Zipf (`item_zipf`), half of the impressions from the user's
  favourite categories; each has a category, a latent vector near its category's, a price
  (log-normal around its category's level; 10% of impressions show it 20% off) and a bias;
- `recent_items`: the user's last items, from their favourite categories, the same for one user
  within a 10-minute slot of `ts` (newest first).
Clicks: `click ~ Bernoulli(sigmoid(logit))` with logit = bias + item bias(t) + R(t)u . v (user and
item latents) + 0.8 * cos(mean of the recent items' latents, v) + category popularity(t) +
category x local hour + device + device x category - price sensitivity * (log price - the
category's level) + 0.4 * discounted. Drift: R(t) rotates each pair of latent dimensions at
`drift_per_hour` times 1, sqrt 2, sqrt 3, ... radians per hour (quasi-periodic: uncorrelated
with the start after a few hours, never back), and every category's popularity and every
item's bias is a sinusoid of `ts` at 0.5 to 1.5 times `drift_per_hour` radians per hour (its
own speed); a frozen model slowly goes stale. The bias
is solved at construction so that the click rate at ts = start_ms is `base_ctr`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from stages.common.errors import ConfigError
from stages.ingest.core.randomness import M32, mix, uniform, zipf_ranks

CATEGORIES = (
    "shoes", "books", "electronics", "toys", "garden", "beauty", "sports", "kitchen", "music",
    "games", "grocery", "fashion", "jewelry", "baby", "pets", "auto", "office", "health",
    "tools", "home", "outdoor", "video", "phones", "computers",
)  # fmt: skip
DEVICES = ("mobile", "desktop", "tablet", "app")
_DEVICE_SHARE = np.array([0.5, 0.3, 0.1, 0.1])
RECENT = 5  # the length of `user.recent_items` (the preset's max_len)
_HOUR_MS = 3_600_000
_SLOT_MS = 600_000  # recent items stay the same for a user within 10 minutes
_STREAMS = 8  # hashes per event: user, item, exposure, device, discount, label
_FORMAT = (
    '{"event_id":"%s:%d","ts":%d,"click":%d,"user":{"id":"u%d","recent_items":[%s]},'
    '"item":{"id":"i%d","category":"%s","price":%s},"device":"%s","hour":%d}'
)
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class EcommerceConfig:
    """Parameters of the simulated shop (see the module docstring).

    seed: 0 <= seed < 2**63. n_users, n_items: >= 1. user_zipf, item_zipf: > 0, the exponents
    of the popularity laws. latent_dim: even, 2..32. drift_per_hour: >= 0, radians per simulated
    hour (0: no drift). base_ctr: in (0, 1), the click rate at the start. events_per_s: > 0,
    simulated events per second (the clock of `ts`). start_ms: `ts` of event 0, ms since 1970.
    """

    seed: int = 0
    n_users: int = 200_000
    n_items: int = 50_000
    user_zipf: float = 1.05
    item_zipf: float = 1.1
    latent_dim: int = 8
    drift_per_hour: float = 0.5
    base_ctr: float = 0.05
    events_per_s: float = 1000.0
    start_ms: int = 1_764_979_200_000

    def __post_init__(self) -> None:
        checks = [
            (0 <= self.seed < 2**63, "seed must be in [0, 2**63)"),
            (self.n_users >= 1 and self.n_items >= 1, "n_users and n_items must be >= 1"),
            (self.user_zipf > 0 and self.item_zipf > 0, "the Zipf exponents must be > 0"),
            (2 <= self.latent_dim <= 32 and self.latent_dim % 2 == 0,
             "latent_dim must be even, 2..32"),
            (self.drift_per_hour >= 0, "drift_per_hour must be >= 0"),
            (0 < self.base_ctr < 1, "base_ctr must be in (0, 1)"),
            (self.events_per_s > 0, "events_per_s must be > 0"),
            (self.start_ms >= 0, "start_ms must be >= 0"),
        ]  # fmt: skip
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ConfigError("ecommerce generator: " + "; ".join(problems))

    def fingerprint(self) -> str:
        """8 hex digits that change whenever any parameter changes (part of a source tag)."""
        return hashlib.blake2b(repr(self).encode(), digest_size=4).hexdigest()


@dataclass(frozen=True)
class EcommerceEvents:
    """Events first..first+n-1 in columns (0-based user/item indexes; ids are index + 1).

    recent: int64[n, 5] item indexes, newest first, valid up to n_recent[i]; click_prob: the
    hidden model's probability, click: the label drawn from it.
    """

    first: int
    ts_ms: Ints
    user: Ints
    item: Ints
    category: Ints
    device: Ints
    hour: Ints
    discounted: npt.NDArray[np.bool_]
    recent: Ints
    n_recent: Ints
    click_prob: Floats
    click: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return len(self.ts_ms)


@dataclass(frozen=True)
class EcommerceChunk:
    """The JSON lines of events start..start+n-1 (no line ends), their times and labels."""

    start: int
    rows: list[bytes]
    event_time_ms: Ints
    labels: npt.NDArray[np.int8]
    click_prob: Floats

    def __len__(self) -> int:
        return len(self.rows)


class _World:
    """The tables of one config (drawn once from the seed; a few MB for the defaults)."""

    def __init__(self, c: EcommerceConfig) -> None:
        rng = np.random.default_rng([c.seed, 0xEC0])
        k, n_cat = c.latent_dim, len(CATEGORIES)
        self.cat_vec = rng.normal(0, 1, (n_cat, k)) / math.sqrt(k)
        self.cat_level = rng.uniform(math.log(5), math.log(400), n_cat)
        self.cat_pop = (rng.normal(0, 0.5, n_cat), rng.uniform(0.5, 1.5, n_cat) * c.drift_per_hour,
                        rng.uniform(0, 2 * math.pi, n_cat))  # amplitude, rad/hour, phase
        self.cat_peak = rng.uniform(0, 24, n_cat)  # local hour when the category is most wanted
        self.cat_hour_amp = rng.uniform(0.2, 0.8, n_cat)
        self.device_bias = np.array([0.0, 0.25, -0.15, 0.35])
        self.device_cat = rng.normal(0, 0.45, (len(DEVICES), n_cat))
        weights = rng.dirichlet(np.full(n_cat, 2.0))
        self.item_cat = rng.choice(n_cat, c.n_items, p=weights)
        self.item_vec = 1.2 * self.cat_vec[self.item_cat] + rng.normal(0, 0.8 / math.sqrt(k),
                                                                       (c.n_items, k))
        # item bias(t) = a cos(speed t) + b sin(speed t): a trend per item, at its own speed
        self.item_bias = (rng.normal(0, 0.6, c.n_items), rng.normal(0, 0.6, c.n_items),
                          rng.uniform(0.5, 1.5, c.n_items) * c.drift_per_hour)
        price = np.exp(self.cat_level[self.item_cat] + rng.normal(0, 0.5, c.n_items))
        self.item_log_price = np.log1p(np.round(price, 2))
        self.price_text = np.array([b"%.2f" % p for p in price], dtype=object)
        self.sale_text = np.array([b"%.2f" % (0.8 * p) for p in price], dtype=object)
        self.sale_log_price = np.log1p(np.round(0.8 * price, 2))
        order = np.argsort(self.item_cat, kind="stable")  # items of each category, by rank
        self.cat_items = order
        self.cat_start = np.searchsorted(self.item_cat[order], np.arange(n_cat))
        self.cat_count = np.bincount(self.item_cat, minlength=n_cat).astype(np.float64)
        self.user_vec = rng.normal(0, 1.2 / math.sqrt(k), (c.n_users, k))
        scores = self.user_vec @ self.cat_vec.T
        scores += 0.3 * rng.standard_normal((c.n_users, n_cat), dtype=np.float32)
        top = np.argpartition(-scores, 3, axis=1)[:, :3]
        best = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        self.user_fav = np.take_along_axis(top, best, axis=1)
        self.user_tz = rng.integers(-11, 15, c.n_users)  # UTC-11 .. UTC+14
        self.user_device = rng.choice(len(DEVICES), c.n_users, p=_DEVICE_SHARE)
        self.user_beta = rng.uniform(0.2, 1.0, c.n_users)
        self.user_history = np.minimum(rng.geometric(0.25, c.n_users) - 1, RECENT)
        self.freq = c.drift_per_hour * np.sqrt(np.arange(1, k // 2 + 1, dtype=np.float64))
        self.quoted = np.array([b'"i%d"' % (i + 1) for i in range(c.n_items)], dtype=object)
        self.categories = np.array([name.encode() for name in CATEGORIES], dtype=object)
        self.devices = np.array([name.encode() for name in DEVICES], dtype=object)


class EcommerceStream:
    """The event stream of `config` under the event-id source `source` (see the module
    docstring). Deterministic: the same config, source and seqs give the same bytes."""

    def __init__(self, config: EcommerceConfig, source: str = "ecom") -> None:
        self.config, self.source = config, source
        self._w = _World(config)
        self._key = np.uint64((config.seed * 0x5851F42D4C957F2D + 0xEC) % 2**64)
        self._bias = 0.0
        probe = self.events(0, 8192)
        logits = self._logit(probe, probe.ts_ms)
        lo, hi = -15.0, 5.0  # the bias that gives base_ctr at the start (bisection)
        for _ in range(50):
            mid = (lo + hi) / 2
            rate = float(np.mean(1 / (1 + np.exp(-(logits + mid)))))
            lo, hi = (mid, hi) if rate < config.base_ctr else (lo, mid)
        self._bias = (lo + hi) / 2

    def times(self, first_seq: int, n: int) -> Ints:
        """The simulated `ts` (ms) of events first_seq..first_seq+n-1 (non-decreasing)."""
        seq = np.arange(first_seq, first_seq + n, dtype=np.float64)
        return self.config.start_ms + np.floor(seq * (1000.0 / self.config.events_per_s)).astype(
            np.int64
        )

    def events(self, first_seq: int, n: int, now_ms: int | None = None) -> EcommerceEvents:
        """Events first_seq..+n-1 in columns; `now_ms`: their `ts` (default: simulated)."""
        if first_seq < 0 or n < 0 or first_seq + n > 2**40:
            raise ConfigError(f"ecommerce events need 0 <= first_seq, n, first_seq+n <= 2**40; "
                              f"got first_seq={first_seq}, n={n}")
        c, w = self.config, self._w
        ts = self.times(first_seq, n) if now_ms is None else np.full(n, now_ms, np.int64)
        with np.errstate(over="ignore"):
            keys = np.arange(first_seq, first_seq + n, dtype=np.uint64) * np.uint64(_STREAMS)
            h = mix((keys + self._key)[:, None] + np.arange(6, dtype=np.uint64))
        users, items = np.full(1, c.n_users, np.float64), np.full(1, c.n_items, np.float64)
        user = zipf_ranks(uniform(h[:, 0] & M32, 2.0**32), users, c.user_zipf).astype(np.int64) - 1
        pick = ((h[:, 2] >> np.uint64(32)) & np.uint64(3)).astype(np.int64)  # favourite 0 twice
        exposed_cat = w.user_fav[user, np.maximum(pick - 1, 0)]
        global_rank = zipf_ranks(uniform(h[:, 1] & M32, 2.0**32), items, c.item_zipf)
        global_item = global_rank.astype(np.int64) - 1
        cat_item = self._item_of(exposed_cat, uniform(h[:, 1] >> np.uint64(32), 2.0**32))
        personal = uniform(h[:, 2] & M32, 2.0**32) < 0.5
        item = np.where(personal, cat_item, global_item)
        shift = 1 + ((h[:, 3] >> np.uint64(32)) % np.uint64(3)).astype(np.int64)
        main = uniform(h[:, 3] & M32, 2.0**32) < 0.8
        device = np.where(main, w.user_device[user], (w.user_device[user] + shift) % len(DEVICES))
        hour = ((ts // _HOUR_MS) + w.user_tz[user]) % 24
        recent, n_recent = self._recent(user, ts)
        events = EcommerceEvents(
            first=first_seq, ts_ms=ts, user=user, item=item, category=w.item_cat[item],
            device=device, hour=hour, discounted=uniform(h[:, 4] & M32, 2.0**32) < 0.1,
            recent=recent, n_recent=n_recent, click_prob=np.empty(0), click=np.empty(0, np.int8),
        )  # fmt: skip
        prob = 1 / (1 + np.exp(-(self._bias + self._logit(events, ts))))
        click = (uniform(h[:, 5] & M32, 2.0**32) < prob).astype(np.int8)
        return _with_labels(events, prob, click)

    def click_prob(self, events: EcommerceEvents, at_ms: int) -> Floats:
        """The hidden model's click probability of `events`' features at time `at_ms` (their
        local hours as they are): how the click model drifts."""
        at = np.full(len(events), at_ms, np.int64)
        return 1 / (1 + np.exp(-(self._bias + self._logit(events, at))))

    def chunk(self, first_seq: int, n: int, now_ms: int | None = None) -> EcommerceChunk:
        """Events first_seq..+n-1 as JSON lines (no newline or tab inside any line)."""
        e = self.events(first_seq, n, now_ms)
        w = self._w
        quoted = w.quoted[e.recent].tolist()
        recent = [b",".join(q[:m]) for q, m in zip(quoted, e.n_recent.tolist())]
        price = np.where(e.discounted, w.sale_text[e.item], w.price_text[e.item]).tolist()
        fmt, source = _FORMAT.encode(), self.source.encode()
        rows = [
            fmt % (source, seq, t, k, u + 1, r, i + 1, cat, p, dev, hr)
            for seq, t, k, u, r, i, cat, p, dev, hr in zip(
                range(first_seq, first_seq + n), e.ts_ms.tolist(), e.click.tolist(),
                e.user.tolist(), recent, e.item.tolist(), w.categories[e.category].tolist(),
                price, w.devices[e.device].tolist(), e.hour.tolist(),
            )
        ]  # fmt: skip
        return EcommerceChunk(first_seq, rows, e.ts_ms, e.click, e.click_prob)

    def batch(self, first_seq: int, n: int, now_ms: int | None = None) -> list[bytes]:
        """The JSON lines of events first_seq..+n-1 (see `chunk`)."""
        return self.chunk(first_seq, n, now_ms).rows

    def _item_of(self, category: Ints, u: Floats) -> Ints:
        """An item of each category, the category's items by a Zipf law over their ranks."""
        w = self._w
        count = w.cat_count[category]
        rank = zipf_ranks(u, count, self.config.item_zipf).astype(np.int64) - 1
        return w.cat_items[w.cat_start[category] + rank]  # type: ignore[no-any-return]

    def _recent(self, user: Ints, ts: Ints) -> tuple[Ints, Ints]:
        """The user's last items at `ts`: from their favourite categories, fixed per slot."""
        w = self._w
        since = np.maximum(ts - self.config.start_ms, 0)
        slot, hours = since // _SLOT_MS, since // _HOUR_MS
        n_recent = np.minimum(w.user_history[user] + hours, RECENT)
        with np.errstate(over="ignore"):
            base = (user.astype(np.uint64) << np.uint64(24)) ^ slot.astype(np.uint64)
            h = mix((base * np.uint64(RECENT) + self._key)[:, None]
                    + np.arange(RECENT, dtype=np.uint64))
        which = (h >> np.uint64(40)) % np.uint64(4)  # favourite 0 twice as often
        cats = w.user_fav[user[:, None], np.maximum(which.astype(np.int64) - 1, 0)]
        recent = self._item_of(cats.ravel(), uniform(h & M32, 2.0**32).ravel()).reshape(-1, RECENT)
        return recent, n_recent

    def _logit(self, e: EcommerceEvents, ts: Ints) -> Floats:
        """The click logit without the bias at times `ts` (see the module docstring)."""
        w = self._w
        t_h = (ts - self.config.start_ms) / _HOUR_MS
        v = w.item_vec[e.item]
        u = w.user_vec[e.user]
        # The rotation moves slowly: one angle per simulated second (few distinct per batch).
        seconds, where = np.unique((ts - self.config.start_ms) // 1000, return_inverse=True)
        angle = (seconds / 3600.0)[:, None] * w.freq
        cos, sin = np.cos(angle)[where], np.sin(angle)[where]  # [n, k/2]
        ua, ub = u[:, 0::2], u[:, 1::2]
        va, vb = v[:, 0::2], v[:, 1::2]
        latent = ((cos * ua - sin * ub) * va + (sin * ua + cos * ub) * vb).sum(axis=1)
        summed = np.zeros_like(v)
        for j in range(RECENT):
            summed += w.item_vec[e.recent[:, j]] * (j < e.n_recent)[:, None]
        norms = np.sqrt((summed * summed).sum(axis=1) * (v * v).sum(axis=1))
        similar = (summed * v).sum(axis=1) / np.maximum(norms, 1e-12)
        c = e.category
        amp, speed, phase = w.cat_pop
        popularity = amp[c] * np.cos(speed[c] * t_h + phase[c])
        daily = w.cat_hour_amp[c] * np.cos(2 * math.pi * (e.hour - w.cat_peak[c]) / 24)
        bias_a, bias_b, bias_speed = w.item_bias
        trend = bias_speed[e.item] * t_h
        item_bias = bias_a[e.item] * np.cos(trend) + bias_b[e.item] * np.sin(trend)
        log_price = np.where(e.discounted, w.sale_log_price[e.item], w.item_log_price[e.item])
        price = -w.user_beta[e.user] * (log_price - np.log1p(np.exp(w.cat_level[c])))
        return (  # type: ignore[no-any-return]
            item_bias + latent + 0.8 * similar + popularity + daily
            + w.device_bias[e.device] + w.device_cat[e.device, c] + price + 0.4 * e.discounted
        )


def _with_labels(e: EcommerceEvents, prob: Floats, click: npt.NDArray[np.int8]) -> EcommerceEvents:
    return replace(e, click_prob=prob, click=click)


def ecommerce_source_tag(config: EcommerceConfig) -> str:
    """A stable event-id source for a stream of `config`: `ecom<seed>-<fingerprint>`."""
    return f"ecom{config.seed}-{config.fingerprint()}"[:32]
