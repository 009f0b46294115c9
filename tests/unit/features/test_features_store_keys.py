"""The feature store's own keys (beside stages/common/keys.py), exact bytes."""

import pytest

from stages.features.store import stream_bytes_key, stream_index_key


def test_stream_retention_keys_exact_bytes() -> None:
    assert stream_index_key("ns") == b"freshrec:v1:{ns}:samples:index"
    assert stream_bytes_key("ns") == b"freshrec:v1:{ns}:samples:bytes"


def test_stream_retention_keys_refuse_a_bad_namespace() -> None:
    with pytest.raises(ValueError, match="bad Redis namespace"):
        stream_index_key("no spaces")
