"""Raw rows of any feature schema in columns: what a parser gives and the transform takes.

Columns follow the schema's declaration order (`schema.dense`, `schema.categorical`,
`schema.multi`). Categorical values are kept as 64-bit numbers before hashing:

- `hex` fields: the digits' value (< 2**32), exactly what the Criteo ids were always made of;
- `int` fields: the integer as uint64 (two's complement for negatives);
- `str` fields: `string_value(text)`, a stable 64-bit hash of the UTF-8 bytes.

A multi field of `max_len` L has L value columns and one length column: the values of row i
are `multi_values[i, start:start + multi_len[i, k]]` (the first L values of the list).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


def string_value(text: str) -> int:
    """The 64-bit value of a `str` categorical value (blake2b, 8 bytes, little-endian)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class RawColumns:
    """label int8[n]; dense float64[n, D] (NaN = missing; every declared dense field, bucketized
    ones too); cat_values uint64[n, C]; cat_missing bool[n, C]; multi_values uint64[n, M] (M =
    the sum of max_len); multi_len int32[n, K] (K = multi fields)."""

    label: npt.NDArray[np.int8]
    dense: npt.NDArray[np.float64]
    cat_values: npt.NDArray[np.uint64]
    cat_missing: npt.NDArray[np.bool_]
    multi_values: npt.NDArray[np.uint64]
    multi_len: npt.NDArray[np.int32]

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def take(self, index: npt.NDArray[np.int64] | slice) -> RawColumns:
        """The rows at `index`, order as given."""
        return RawColumns(
            self.label[index], self.dense[index], self.cat_values[index],
            self.cat_missing[index], self.multi_values[index], self.multi_len[index],
        )

    @staticmethod
    def empty(n_dense: int, n_cat: int, n_multi_values: int, n_multi: int) -> RawColumns:
        return RawColumns(
            np.empty(0, np.int8), np.empty((0, n_dense), np.float64),
            np.empty((0, n_cat), np.uint64), np.empty((0, n_cat), np.bool_),
            np.empty((0, n_multi_values), np.uint64), np.empty((0, n_multi), np.int32),
        )

    @staticmethod
    def concat(parts: list[RawColumns]) -> RawColumns:
        """The rows of all parts in order (at least one part)."""
        return RawColumns(
            np.concatenate([p.label for p in parts]),
            np.concatenate([p.dense for p in parts]),
            np.concatenate([p.cat_values for p in parts]),
            np.concatenate([p.cat_missing for p in parts]),
            np.concatenate([p.multi_values for p in parts]),
            np.concatenate([p.multi_len for p in parts]),
        )
