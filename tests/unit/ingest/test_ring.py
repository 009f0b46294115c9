"""The resend ring (stages/ingest/core/ring.py): newest records, within its three limits."""

from __future__ import annotations

from stages.ingest.core.ring import RingLimits, SentRing


def _keys(first: int, count: int) -> list[bytes]:
    return [b"k%d" % i for i in range(first, first + count)]


def test_keeps_the_newest_records_within_the_record_limit() -> None:
    ring = SentRing(RingLimits(records=5, bytes=1 << 20, seconds=30))
    ring.add(_keys(0, 3), [b"v"] * 3, now=0.0)
    ring.add(_keys(3, 4), [b"v"] * 4, now=1.0)
    keys, values = ring.records()
    assert keys == _keys(2, 5) and len(values) == len(ring) == 5


def test_drops_records_older_than_the_age_limit_and_past_the_byte_limit() -> None:
    ring = SentRing(RingLimits(records=100, bytes=10, seconds=30))
    ring.add([b"a"], [b"1234"], now=0.0)
    ring.add([b"b"], [b"1234"], now=20.0)
    assert ring.records()[0] == [b"a", b"b"] and ring.size_bytes == 10
    ring.add([b"c"], [b"1"], now=21.0)  # 12 bytes: the oldest batch goes
    assert ring.records()[0] == [b"b", b"c"]
    ring.expire(now=51.0)
    assert ring.records()[0] == [b"c"] and ring.size_bytes == 2


def test_a_record_limit_of_zero_keeps_nothing() -> None:
    ring = SentRing(RingLimits(records=0, bytes=1 << 20, seconds=30))
    ring.add([b"a"], [b"v"], now=0.0)
    assert len(ring) == 0 and ring.records() == ([], [])
