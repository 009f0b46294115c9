import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from stages.common.hashing import HASH_VERSION, fallback_ids, feature_id, feature_ids, splitmix64


def test_known_ids_never_change() -> None:
    # Pinned values: a change here invalidates every trained model (bump HASH_VERSION instead).
    assert HASH_VERSION == 1
    assert feature_id(0, 0x68FD1E64) == 6863199212804522528
    assert feature_id(1, None) == 1469664382864846916
    assert fallback_ids(1)[0] == 3013332077924346439


@given(
    st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=30),
    st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_vectorised_equals_scalar(values: list[int], missing: list[bool]) -> None:
    v = np.array([values], dtype=np.uint32)
    m = np.array([missing[: len(values)]])
    ids = feature_ids(v, m)
    for f, value in enumerate(values):
        assert ids[0, f] == feature_id(f, None if m[0, f] else value)


def test_no_collisions_across_fields_missing_and_fallback() -> None:
    values = np.tile(np.arange(1000, dtype=np.uint32), (26, 1)).T
    present = feature_ids(values, np.zeros_like(values, dtype=bool))
    missing = feature_ids(values[:1], np.ones((1, 26), dtype=bool))
    all_ids = np.concatenate([present.ravel(), missing.ravel(), fallback_ids(26)])
    assert len(np.unique(all_ids)) == all_ids.size


@given(st.lists(st.integers(0, 2**64 - 1), min_size=2, max_size=50, unique=True))
def test_splitmix_is_a_bijection_on_samples(keys: list[int]) -> None:
    out = splitmix64(np.array(keys, dtype=np.uint64))
    assert len(set(out.tolist())) == len(keys)
