"""Columns -> rows of the Criteo-like generator, vectorised (the synthetic generator's output).

The rows have the Criteo preset's layout: tab-separated, the label, N_DENSE integer fields,
N_CATS fields of 8 lowercase hex digits (an empty field is missing).

Each row is laid out as a fixed-width record of 8- and 9-byte cells in which 0 bytes are
padding (no valid row contains a 0 byte); one `bytes.translate` pass removes the padding and one
`split` cuts the rows. Lookup tables turn numbers into digits, so there is no per-value Python.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt


N_DENSE = 13  # integer fields per row
N_CATS = 26  # hex fields per row
DENSE_LIMIT = 999_999  # |dense value| must not exceed this (6 digits)
_TAB, _NL = 9, 10
_CAT_CELL = np.dtype([("tab", "u1"), ("hex", "<u8")])  # packed: TAB + 8 hex digits
_ROW = np.dtype(
    [("label", "u1"), ("dense", "<u8", (N_DENSE,)), ("cats", _CAT_CELL, (N_CATS,)), ("end", "u1")]
)


def _cells(texts: list[bytes]) -> npt.NDArray[np.uint32]:
    """4-byte cells as uint32, one per text (spaces and the rest become 0 padding)."""
    raw = np.frombuffer(b"".join(t.ljust(4, b" ") for t in texts), dtype=np.uint8)
    return np.where(raw == ord(" "), 0, raw).astype(np.uint8).view(np.uint32)


@cache
def _tables() -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32], npt.NDArray[np.uint32]]:
    """The digit tables (built once, on first use).

    A dense cell is 8 bytes: TAB, sign, then six right-aligned digits in two parts.
    high[neg * 100 + v // 10**4]: TAB, sign, the two high digits (none for 0); high[200]: TAB only
    (a missing value). low[(v >= 10**4) * 10**4 + v % 10**4]: the four low digits, zero-filled
    only after a high part; low[2 * 10**4]: nothing. hex4[v]: the 4 hex digits of 16-bit v.
    """
    high = _cells(
        [b"\t" + (b"-" if neg else b" ") + (b"%2d" % v if v else b"  ") for neg in (0, 1)
         for v in range(100)] + [b"\t"]
    )  # fmt: skip
    low = _cells([b"%4d" % v for v in range(10**4)] + [b"%04d" % v for v in range(10**4)] + [b""])
    hex4 = _cells([b"%04x" % v for v in range(1 << 16)])
    return high, low, hex4


def format_rows(
    labels: npt.NDArray[np.int8],
    dense: npt.NDArray[np.int64],
    dense_missing: npt.NDArray[np.bool_],
    cats: npt.NDArray[np.uint32],
    cat_missing: npt.NDArray[np.bool_],
) -> list[bytes]:
    """Criteo rows (no line end) from columns: labels int8[n] (0/1), dense int64[n, 13] with
    |value| <= DENSE_LIMIT, cats uint32[n, 26]; a True in a `*_missing` mask writes an empty field.
    """
    high_t, low_t, hex_t = _tables()
    n = labels.shape[0]
    out = np.empty(n, dtype=_ROW)
    out["label"] = labels.astype(np.uint8) + np.uint8(ord("0"))
    out["end"] = _NL
    high, low = np.divmod(np.abs(dense), 10**4)
    high_index = np.where(dense_missing, 200, (dense < 0) * 100 + high)
    low_index = np.where(dense_missing, 2 * 10**4, low + (high > 0) * 10**4)
    out["dense"] = np.take(high_t, high_index).astype(np.uint64) | (
        np.take(low_t, low_index).astype(np.uint64) << np.uint64(32)
    )
    cells = out["cats"]
    cells["tab"] = _TAB
    hi = np.take(hex_t, cats >> np.uint32(16)).astype(np.uint64)
    lo = np.take(hex_t, cats & np.uint32(0xFFFF)).astype(np.uint64)
    cells["hex"] = np.where(cat_missing, np.uint64(0), hi | (lo << np.uint64(32)))
    return out.tobytes().translate(None, b"\0").split(b"\n")[:-1]
