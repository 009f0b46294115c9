import numpy as np
import pytest

from stages.common.errors import ContractError
from stages.common.events import decode_events, encode_event, event_error, event_id
from stages.common.samples import SampleBatch, SourceRange, decode_block, encode_block
from stages.common.transform import to_samples

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


def test_block_round_trip() -> None:
    decoded = decode_events([encode_event("s:1", 5, GOOD)] * 4)
    samples = to_samples(decoded.events.rows, decoded.events.event_time_ms)
    block = decode_block(encode_block(samples, SourceRange("t.x", 3, 10, 13), seq=7))
    assert block.seq == 7 and block.source == SourceRange("t.x", 3, 10, 13)
    assert np.array_equal(block.samples.ids, samples.ids)
    assert np.array_equal(block.samples.dense, samples.dense)
    assert len(SampleBatch.concat([samples, samples.take(slice(0, 1))])) == 5


def test_block_errors() -> None:
    fields = encode_block(SampleBatch.concat([]), SourceRange("t", 0, 0, 0), seq=1)
    with pytest.raises(ContractError, match="schema version"):
        decode_block({**fields, b"v": b"9"})
    with pytest.raises(ContractError, match="unknown fields"):
        decode_block({**fields, b"extra": b"1"})
    with pytest.raises(ContractError, match="malformed"):
        decode_block({k: v for k, v in fields.items() if k != b"seq"})
