"""An exact, vectorised test of rows of the Criteo layout for a whole batch of lines (NumPy bit
sets, pure): tab-separated, the label (0/1), D int dense fields (`-?[0-9]{1,18}` or empty), then
C categorical fields of hex digits (empty, or 1 to 8 digits of either case).

`surely_valid(data, offsets, D, C)` is True for line i only when the schema's row pattern
(`rows_arrow`) accepts it; False means "invalid, or not decided here" (`validate.fast_valid`
matches those lines with RE2). It decides every usual row: one without b"\\r" whose label and D
dense fields, with their tabs, fit in 56 bytes (real and synthetic Criteo rows, D = 13, need at
most ~45), none longer than 18 bytes, and whose hex fields have exactly 8 lowercase digits.
It costs about a third of running the row regex over every line with RE2.

How: four byte classes (tab, newline, digit, a-f) become bit sets (a bit per byte, in uint64
words), so the rest works on 1/8 of the bytes. The first D+1 tab positions of a line come from a
57-bit window at its start; the label and the dense fields are checked in that window; the
categorical part, from the (D+1)th tab to the line end, by counting its tabs (C) and the tabs not
followed by an empty field or exactly 8 hex digits (none). Bytes of other classes are rare:
each is looked at (only a minus right after a tab and before a digit may stay).

The bit sets live in `scratch` arrays (a few MB per batch).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from stages.ingest.core.scratch import scratch

_BLOCK = 1 << 20  # bytes classified at a time: the byte-sized temporaries stay in the L2 cache
_WINDOW = 57  # bits of a line's start that `_window` gives (at least)
_ONE = np.uint64(1)
_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)

Bits = npt.NDArray[np.uint64]
MAX_DENSE = 27  # dense fields that fit the window with one-byte values (more: never decided)


def _bits(name: str, words: int) -> Bits:
    return scratch("rowcheck." + name, words, np.uint64)


def _classes(data: npt.NDArray[np.uint8], words: int) -> list[Bits]:
    """Bit sets of `words` words: bit p is set when byte p is a tab, newline, digit, a-f (in
    this order). The words past the data are 0."""
    out = []
    for name in ("tab", "newline", "digit", "letter"):
        bits = _bits(name, words)
        bits[len(data) // 64 :] = 0
        out.append(bits)
    size = min(_BLOCK, len(data))
    tmp = scratch("rowcheck.byte", size, np.uint8)
    hit = scratch("rowcheck.hit", size, np.bool_)
    for start in range(0, len(data), _BLOCK):
        block = data[start : start + _BLOCK]
        ok, low = hit[: len(block)], tmp[: len(block)]
        at = slice(start // 8, start // 8 + (len(block) + 7) // 8)
        for bits, first, count in zip(out, (9, 10, 48, 97), (1, 1, 10, 6)):
            if count == 1:
                np.equal(block, first, out=ok)
            else:  # first <= byte < first + count, in one compare (the subtraction wraps)
                np.subtract(block, first, out=low)
                np.less(low, count, out=ok)
            bits.view(np.uint8)[at] = np.packbits(ok, bitorder="little")
    return out


def _down(bits: Bits, k: int, out: Bits) -> Bits:
    """out[bit p] = bits[bit p + k] (0 < k < 64); returns out."""
    carry = _bits("carry", len(bits))
    np.right_shift(bits, np.uint64(k), out=out)
    np.left_shift(bits[1:], np.uint64(64 - k), out=carry[:-1])
    np.bitwise_or(out[:-1], carry[:-1], out=out[:-1])
    return out


def _prefix_counts(bits: Bits, out: Bits) -> Bits:
    """out[w] = the set bits of bits[:w] (out has one word more than bits)."""
    x, y = _bits("pop_x", len(bits)), _bits("pop_y", len(bits))
    np.right_shift(bits, _ONE, out=y)
    np.bitwise_and(y, _M1, out=y)
    np.subtract(bits, y, out=x)
    np.right_shift(x, np.uint64(2), out=y)
    np.bitwise_and(y, _M2, out=y)
    np.bitwise_and(x, _M2, out=x)
    np.add(x, y, out=x)
    np.right_shift(x, np.uint64(4), out=y)
    np.add(x, y, out=x)
    np.bitwise_and(x, _M4, out=x)
    np.multiply(x, _H01, out=x)
    np.right_shift(x, np.uint64(56), out=x)
    out[0] = 0
    np.cumsum(x, out=out[1:])
    return out


def _popcount(x: Bits) -> Bits:
    x = x - ((x >> _ONE) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return (x * _H01) >> np.uint64(56)


def _count_between(
    bits: Bits, begin: npt.NDArray[np.int64], end: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """The number of set bits of `bits` in [begin[i], end[i]) (begin <= end), for each i."""
    before = _prefix_counts(bits, _bits("before", len(bits) + 1))

    def upto(stop: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        word = stop >> 6
        low = bits[word] & ((_ONE << (stop & 63).astype(np.uint64)) - _ONE)
        return (before[word] + _popcount(low)).astype(np.int64)

    return upto(end) - upto(begin)


def _window(bits: Bits, starts: npt.NDArray[np.int64]) -> Bits:
    """uint64[n]: bit j of item i is bit starts[i] + j of `bits`, for j < 57 (0 above)."""
    raw = bits.view(np.uint8)
    unaligned: Bits = np.ndarray((len(raw) - 7,), dtype="<u8", buffer=raw, strides=(1,))
    return unaligned[starts >> 3] >> (starts & 7).astype(np.uint64)


def _lowest_bit(x: Bits) -> npt.NDArray[np.int64]:
    """Index of the lowest set bit of each item (-1 for 0); exact (powers of 2 are floats)."""
    low = x & (~x + _ONE)
    return np.frexp(low.astype(np.float64))[1].astype(np.int64) - 1


def _set_bits(bits: Bits) -> npt.NDArray[np.int64]:
    """The indices of the set bits, ascending (cheap when few words have any)."""
    words = np.flatnonzero(bits)
    flags = np.flatnonzero(np.unpackbits(bits[words].view(np.uint8), bitorder="little"))
    return words[flags >> 6] * 64 + (flags & 63)


def _is_hex(byte: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    return ((byte - np.uint8(48)) < np.uint8(10)) | ((byte - np.uint8(97)) < np.uint8(6))


def _dense_part(
    tab: Bits, others: Bits, raw: npt.NDArray[np.uint8], starts: npt.NDArray[np.int64],
    ends: npt.NDArray[np.int64], n_dense: int,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:  # fmt: skip
    """(ok, (D+1)th tab) per line: the label is 0 or 1, then D fields of at most 18 bytes
    without a letter (`others`: the bytes that may not be in a dense field), then the (D+1)th
    tab, all in the window; the tab's offset from the line start (2 where not ok)."""
    ok = (raw[starts] - np.uint8(48)) < np.uint8(2)
    tabs = _window(tab, starts)
    ok &= (tabs & np.uint64(3)) == np.uint64(2)  # the label is 1 byte
    runs = ~tabs  # bit j: 19 non-tabs from j on, i.e. a field longer than 18 bytes
    for shift in (1, 2, 4, 8, 3):
        runs &= runs >> np.uint64(shift)
    for _ in range(n_dense):
        tabs &= tabs - _ONE
    cat_tab = _lowest_bit(tabs)
    ok &= (cat_tab > 0) & (cat_tab < np.minimum(_WINDOW, ends - starts))
    cat_tab = np.where(ok, cat_tab, 2)
    dense = ((_ONE << cat_tab.astype(np.uint64)) - _ONE) & ~np.uint64(3)
    ok &= ((_window(others, starts) | runs) & dense) == 0
    return ok, cat_tab


def surely_valid(
    data: bytes, offsets: npt.NDArray[np.int64], n_dense: int, n_cats: int
) -> npt.NDArray[np.bool_]:
    """bool[n]: True only where line i (data[offsets[i] : offsets[i + 1] - 1], each line followed
    by b"\\n") is a valid row of the layout (`n_dense` int fields, `n_cats` hex fields, see the
    module docstring); False where it is not, or where this test cannot tell."""
    if not 1 <= n_dense <= MAX_DENSE or n_cats < 1:
        raise ValueError(f"rowcheck needs 1..{MAX_DENSE} dense and >= 1 categorical fields")
    n = len(offsets) - 1
    if n <= 0:
        return np.zeros(max(n, 0), dtype=np.bool_)
    raw = np.frombuffer(data, dtype=np.uint8)
    words = len(raw) // 64 + 2  # 1 to 2 zero words at the end: windows read past the data
    tab, newline, digit, letter = _classes(raw, words)
    starts, ends = offsets[:-1], offsets[1:] - 1  # ends: the b"\n" of each line

    a, b, c = _bits("a", words), _bits("b", words), _bits("c", words)
    np.bitwise_or(letter, newline, out=a)
    ok, cat_tab = _dense_part(tab, a, raw, starts, ends, n_dense)

    # Bytes not in [0-9a-f], tab or newline: rare, looked at one by one.
    hexdigit = np.bitwise_or(digit, letter, out=digit)
    np.bitwise_or(tab, newline, out=a)  # a = delimiter from here on
    np.bitwise_or(hexdigit, a, out=b)
    np.invert(b, out=b)
    last, used = divmod(len(raw), 64)
    b[last] &= (_ONE << np.uint64(used)) - _ONE
    b[last + 1 :] = 0
    where = _set_bits(b)
    if len(where):
        after = raw[np.minimum(where + 1, len(raw) - 1)]
        before = raw[np.maximum(where - 1, 0)]  # at 0: the byte itself, not a tab
        fine = (raw[where] == 45) & (before == 9) & _is_hex(after)
        ok[np.searchsorted(offsets, where[~fine], side="right") - 1] = False

    # Categorical part: n_cats tabs, each followed by an empty field or 8 hex digits; no newline.
    eight = np.bitwise_and(hexdigit, _down(hexdigit, 1, b), out=b)
    np.bitwise_and(eight, _down(eight, 2, c), out=eight)
    np.bitwise_and(eight, _down(eight, 4, c), out=eight)
    field_ok = np.bitwise_and(_down(eight, 1, c), _down(a, 9, hexdigit), out=c)
    np.bitwise_or(field_ok, _down(a, 1, hexdigit), out=field_ok)
    wrong = np.bitwise_and(tab, np.invert(field_ok, out=field_ok), out=field_ok)
    np.bitwise_or(wrong, newline, out=wrong)
    begin = starts + cat_tab
    ok &= _count_between(wrong, begin, ends) == 0
    ok &= _count_between(tab, begin, ends) == n_cats
    return ok
