"""Sample blocks of any layout: round trip, and the refusal of another schema's blocks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.common.errors import ContractError
from stages.common.layout import compile_layout
from stages.common.samples import (
    BlockLayout,
    SampleBatch,
    SourceRange,
    block_schema,
    decode_block,
    encode_block,
)
from stages.common.schema import SchemaError, load_schema

A = BlockLayout("aaaaaaaaaaaaaaaa", 3, 5)
B = BlockLayout("bbbbbbbbbbbbbbbb", 3, 5)


def _samples(n: int, layout: BlockLayout, seed: int = 0) -> SampleBatch:
    rng = np.random.default_rng(seed)
    return SampleBatch(
        label=rng.integers(0, 2, n).astype(np.uint8),
        dense=rng.normal(size=(n, layout.n_dense)).astype(np.float32),
        ids=rng.integers(0, 2**63, (n, layout.n_slots)).astype(np.uint64),
        event_time_ms=np.arange(n, dtype=np.int64) + 1_700_000_000_000,
    )


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 40), st.integers(0, 20), st.integers(1, 60))
def test_block_round_trip_of_any_layout(n: int, n_dense: int, n_slots: int) -> None:
    layout = BlockLayout("0123456789abcdef", n_dense, n_slots)
    samples = _samples(n, layout, seed=n)
    fields = encode_block(samples, SourceRange("t.x", 3, 10, 13), layout.schema_hash, seq=7)
    assert fields[b"v"] == b"2" and fields[b"schema"] == b"0123456789abcdef"
    assert block_schema(fields) == layout.schema_hash
    block = decode_block(fields, layout)
    assert block.seq == 7 and block.source == SourceRange("t.x", 3, 10, 13)
    assert block.schema_hash == layout.schema_hash
    for name in ("label", "dense", "ids", "event_time_ms"):
        assert np.array_equal(getattr(block.samples, name), getattr(samples, name)), name
    assert block.samples.dense.shape == (n, n_dense) and block.samples.ids.shape == (n, n_slots)


def test_a_block_of_another_schema_is_refused_naming_both() -> None:
    fields = encode_block(_samples(4, A), SourceRange("t", 0, 0, 3), A.schema_hash, seq=9)
    with pytest.raises(SchemaError, match=r"block 9 .*schema aaaaaaaaaaaaaaaa.*expects bbbbbbbbbbbbbbbb"):
        decode_block(fields, B)
    # Same widths are no excuse, and no reshape is tried for other widths either.
    with pytest.raises(SchemaError):
        decode_block(fields, BlockLayout(B.schema_hash, 1, 1))


def test_presets_compile_to_their_own_block_layouts() -> None:
    criteo, shop = load_schema("criteo"), load_schema("ecommerce")
    a, b = BlockLayout.for_schema(criteo), BlockLayout.for_schema(shop)
    assert (a.n_dense, a.n_slots) == (13, 26) and a.schema_hash == criteo.schema_hash
    assert b == BlockLayout.of(compile_layout(shop, 32))  # embedding dims change no sample
    fields = encode_block(_samples(2, b), SourceRange("t", 1, 0, 1), b.schema_hash, seq=1)
    with pytest.raises(SchemaError, match="FRESHREC_SCHEMA"):
        decode_block(fields, compile_layout(criteo, 16))
    assert decode_block(fields, compile_layout(shop, 16)).samples.ids.shape == (2, b.n_slots)


def test_block_errors() -> None:
    fields = encode_block(SampleBatch.concat([], A), SourceRange("t", 0, 0, 0), A.schema_hash, 1)
    assert decode_block(fields, A).samples.dense.shape == (0, 3)
    with pytest.raises(ContractError, match="schema version"):
        decode_block({**fields, b"v": b"9"}, A)
    version_1 = {k: v for k, v in fields.items() if k != b"schema"}
    with pytest.raises(ContractError, match="schema version"):
        decode_block({**version_1, b"v": b"1"}, A)
    assert block_schema(version_1) is None
    with pytest.raises(ContractError, match="unknown fields"):
        decode_block({**fields, b"extra": b"1"}, A)
    with pytest.raises(ContractError, match="malformed"):
        decode_block({k: v for k, v in fields.items() if k != b"seq"}, A)
    bad_width = encode_block(_samples(2, A), SourceRange("t", 0, 0, 1), A.schema_hash, seq=1)
    with pytest.raises(ContractError, match="malformed"):
        decode_block(bad_width, BlockLayout(A.schema_hash, 4, 5))


def test_concat_and_empty_need_the_widths() -> None:
    samples = _samples(3, A)
    assert len(SampleBatch.concat([samples, samples.take(slice(0, 1))])) == 4
    with pytest.raises(ValueError, match="layout"):
        SampleBatch.concat([])
    empty = SampleBatch.concat([], B)
    assert empty.dense.shape == (0, 3) and empty.ids.shape == (0, 5) and len(empty) == 0
    assert SampleBatch.empty(2, 7).ids.dtype == np.uint64
