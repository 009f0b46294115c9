"""Rate limiting (a token bucket), limits and counters of an ingest run (pure: time is an input)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from stages.ingest.core.lines import LineBatch


class TokenBucket:
    """At most `rate` events per second on average, in bursts of at most `burst` events.

    `wait(n, now)` takes n tokens and returns how many seconds the caller must sleep before
    sending them (0.0 when they are available). The bucket starts full. `now` is any monotonic
    clock in seconds.
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self._tokens, self._at = burst, now

    def wait(self, n: int, now: float) -> float:
        """Take `n` tokens (the balance may go negative); seconds to sleep before using them."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate) - n
        self._at = now
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


def head(batch: LineBatch, count: int) -> LineBatch:
    """The first `count` lines of `batch` (all of them when it has fewer)."""
    if count >= len(batch):
        return batch
    end = int(batch.offsets[count])
    full = {i: n for i, n in batch.full_length.items() if i < count}
    return LineBatch(batch.data[:end], batch.offsets[: count + 1], batch.first_line, full)


def tail(batch: LineBatch, count: int) -> LineBatch:
    """`batch` without its first `count` lines (line numbers kept; empty when it has fewer)."""
    if count <= 0:
        return batch
    count = min(count, len(batch))
    base = int(batch.offsets[count])
    full = {i - count: n for i, n in batch.full_length.items() if i >= count}
    offsets = batch.offsets[count:] - base
    return LineBatch(batch.data[base:], offsets, batch.first_line + count, full)


def split(batch: LineBatch, size: int) -> list[LineBatch]:
    """`batch` cut into consecutive batches of at most `size` lines (line numbers kept)."""
    if len(batch) <= size:
        return [batch]
    parts = []
    for start in range(0, len(batch), size):
        stop = min(start + size, len(batch))
        base = int(batch.offsets[start])
        offsets = batch.offsets[start : stop + 1] - base
        full = {i - start: n for i, n in batch.full_length.items() if start <= i < stop}
        data = batch.data[base : int(batch.offsets[stop])]
        parts.append(LineBatch(data, offsets, batch.first_line + start, full))
    return parts


@dataclass
class Tally:
    """Running counts of one ingest run (mutable; `IngestSummary` is the frozen result).

    read: lines taken from the source; queued: event records handed to the producer;
    dead: dead letters handed to the producer; by_reason: dead letters per reason kind.
    """

    read: int = 0
    queued: int = 0
    dead: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class IngestSummary:
    """The outcome of a run. Invariant: read == sent + dead_lettered + failed.

    read: lines read and handed on (lines read ahead but dropped by `stop` are not counted);
    sent: events acknowledged by the broker; dead_lettered: bad lines whose
    dead letter was acknowledged; failed: lines whose record (event or dead letter) could not be
    delivered within the delivery timeout (0 unless the broker stayed away); seconds: wall time;
    by_reason: bad lines per reason kind (delivered or not); stopped: ended by `stop`/Ctrl-C;
    topic_resets: times the events topic was seen recreated (a new topic id);
    resent_after_topic_reset: records of the resend ring sent again after those (copies: not
    in `sent`).
    """

    read: int
    sent: int
    dead_lettered: int
    failed: int
    seconds: float
    by_reason: dict[str, int]
    stopped: bool = False
    resumed_from_line: int | None = None
    topic_resets: int = 0
    resent_after_topic_reset: int = 0

    @property
    def events_per_s(self) -> float:
        """Lines read per second of the run."""
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        """One line for people: totals, rate and the dead-letter reasons."""
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.by_reason.items()))
        text = (
            f"read {self.read:,}, sent {self.sent:,}, dead-lettered {self.dead_lettered:,}, "
            f"failed {self.failed:,} in {self.seconds:.1f} s ({self.events_per_s:,.0f} events/s)"
        )
        if self.resumed_from_line is not None:
            text += f"; resumed at line {self.resumed_from_line:,}"
        if self.topic_resets:
            text += (f"; topic recreated {self.topic_resets:,} times, "
                     f"resent {self.resent_after_topic_reset:,}")
        return text + (f"; reasons: {reasons}" if reasons else "")


def summarize(
    tally: Tally,
    failed_events: int,
    failed_dead: int,
    seconds: float,
    stopped: bool,
    resumed_from_line: int | None = None,
    topic_resets: int = 0,
    resent: int = 0,
) -> IngestSummary:
    """The summary once the producer is closed (the failures are final)."""
    return IngestSummary(
        read=tally.read,
        sent=tally.queued - failed_events,
        dead_lettered=tally.dead - failed_dead,
        failed=failed_events + failed_dead,
        seconds=seconds,
        by_reason=dict(tally.by_reason),
        stopped=stopped,
        resumed_from_line=resumed_from_line,
        topic_resets=topic_resets,
        resent_after_topic_reset=resent,
    )
