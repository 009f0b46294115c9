from hypothesis import given
from hypothesis import strategies as st

from stages.common.events import decode_events, encode_event, event_error, event_id

GOOD = b"1\t" + b"\t".join([b"5", b"", b"-3"] + [b"7"] * 10) + b"\t" + b"\t".join(
    [b"68fd1e64", b""] + [b"0000abcd"] * 24
)


def test_event_round_trip_and_bad_records() -> None:
    values = [encode_event(event_id("src", i), 1_700_000_000_000 + i, GOOD) for i in range(3)]
    values.insert(1, b"garbage")
    values.append(b"2\tsrc:9\t1\t" + GOOD)
    decoded = decode_events(values)
    assert decoded.events.event_ids == ["src:0", "src:1", "src:2"]
    assert decoded.good_index.tolist() == [0, 2, 3]
    assert [b.index for b in decoded.bad] == [1, 4]
    assert "unsupported event schema version" in decoded.bad[1].reason
    assert event_error(values[0]) is None


def test_decoder_agrees_with_event_error_on_edge_cases() -> None:
    ok = encode_event("s:1", 5, GOOD)
    values = [
        ok,
        ok + b"\n",
        ok + b"\r",
        ok.replace(b"\t5\t", b"\t9999999999999999999\t", 1),
        ok.replace(b"s:1", b"s 1", 1),
        b"",
        b"1\t\t\t",
    ]
    decoded = decode_events(values)
    assert decoded.good_index.tolist() == [0]
    assert all(event_error(values[b.index]) for b in decoded.bad)
    assert decoded.events.event_time_ms.tolist() == [5]


@given(st.lists(st.binary(max_size=80), max_size=10), st.lists(st.booleans(), max_size=10))
def test_decoder_never_raises_and_counts_add_up(noise: list[bytes], keep: list[bool]) -> None:
    values = [encode_event(f"s:{i}", i, GOOD) if k else n for i, (n, k) in enumerate(zip(noise, keep))]
    decoded = decode_events(values)
    assert len(decoded.events) + len(decoded.bad) == len(values)
    assert sorted([*decoded.good_index.tolist(), *[b.index for b in decoded.bad]]) == list(range(len(values)))
    assert all((event_error(values[i]) is None) for i in decoded.good_index.tolist())
