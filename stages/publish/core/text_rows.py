"""Raw Criteo-like text rows -> columns without the RowParser: the fast paths of
`core.requests` (it falls back to the schema's RowParser, which finds the reason, whenever
these say None).

For a Criteo-like schema (`text_layout`: tab-separated by position, the label, int dense
fields, then hex categorical fields, nothing else) a body of valid rows is validated and parsed
either in one pass of NumPy array operations over its bytes (`parse_body`, no Python per row or
per field; hex and short integer fields are read eight characters at a time as uint64 words,
`hex8_words` and `digits8_words`) or, for a body of a few rows, by one regular expression per
row (`parse_few`: the array parser's fixed cost is about 0.3 ms, measured, more than a 1-row
request's whole scoring). Both take exactly the same rows and give the same columns
(`tests/unit/publish/test_requests.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from stages.common.raw import RawColumns
from stages.common.schema import FeatureSchema

_TAB, _NL, _CR, _MINUS, _ZERO = 9, 10, 13, 45, 48
_INT_WIDTH = 19  # '-' and 18 digits: the longest integer field of the array parser
# Bodies up to this size are parsed by `parse_few`: measured, up to about 4 KiB (16 Criteo
# rows) it is faster than the array parser.
FEW_ROWS_BYTES = 4 << 10


@dataclass(frozen=True)
class RequestRows:
    """Parsed rows before the transform: `raw` (label 0 where none was sent), `has_label`."""

    raw: RawColumns
    has_label: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.raw)



@dataclass(frozen=True)
class TextLayout:
    """A Criteo-like row: label, `n_dense` integers, `n_cats` 8-hex-digit values, by tab."""

    n_dense: int
    n_cats: int
    pattern: re.Pattern[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", few_rows_pattern(self))

    @property
    def n_fields(self) -> int:
        return 1 + self.n_dense + self.n_cats


def text_layout(schema: FeatureSchema) -> TextLayout | None:
    """The array parser's layout of `schema`, or None when its rows are not Criteo-like."""
    fmt = schema.format
    dense, cats = schema.dense, schema.categorical
    if fmt.kind != "tsv" or fmt.header or schema.multi or schema.event_id or schema.event_time:
        return None
    if any(f.type != "int" for f in dense) or any(f.type != "hex" for f in cats):
        return None
    order = (schema.label.name, *(f.name for f in dense), *(f.name for f in cats))
    return TextLayout(len(dense), len(cats)) if schema.columns() == order else None


def _gather(buf: npt.NDArray[np.uint8], starts: npt.NDArray[np.intp], width: int
            ) -> npt.NDArray[np.uint8]:
    """buf[starts[..., None] + 0..width-1]; `buf` ends with at least `width` padding bytes,
    so every window is inside it (bytes past a field are masked by callers)."""
    return np.lib.stride_tricks.sliding_window_view(buf, width)[starts]


def parse_body(body: bytes, layout: TextLayout) -> RequestRows | None:
    """Rows one per line (with or without the label, empty lines skipped, one trailing '\\r'
    each) -> columns, with array operations only; None when the body has no row or any row is
    not one the array parser takes (then the RowParser says why, or parses it)."""
    n_fields, n_dense = layout.n_fields, layout.n_dense
    # the padding keeps every fixed-width window of `_gather` inside the buffer
    buf = np.frombuffer(b"".join((body, b"\n", bytes(_INT_WIDTH))), dtype=np.uint8)
    ends = np.flatnonzero(buf == _NL)
    starts = np.concatenate(([0], ends[:-1] + 1))
    ends = ends - ((ends > starts) & (buf[ends - 1] == _CR))
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    if len(starts) == 0:
        return None
    tabs = np.flatnonzero(buf == _TAB)
    first_tab = np.searchsorted(tabs, starts)
    n_tabs = np.searchsorted(tabs, ends) - first_tab
    if not np.all((n_tabs == n_fields - 1) | (n_tabs == n_fields - 2)):
        return None
    skip = (n_tabs == n_fields - 2).astype(np.intp)  # 1: no label, field j is the line's j-1
    k = np.arange(n_fields)[None, :] - skip[:, None]  # the field's index within its line
    # tab_at: the tab after field k; it runs from -2 to len(tabs), which the sentinel and
    # negative indexing keep in bounds (those cells are replaced by the line bounds)
    tab_at = first_tab[:, None] + k
    tabs = np.append(tabs, 0)
    field_end = np.where(k >= n_tabs[:, None], ends[:, None], tabs[tab_at])
    field_start = np.where(k <= 0, starts[:, None], tabs[tab_at - 1] + 1)
    length = field_end - field_start
    n = len(starts)
    # label: one digit 0/1 when present
    label_char = buf[field_start[:, 0]]
    has_label = skip == 0
    if not np.all(~has_label | ((length[:, 0] == 1) & ((label_char == _ZERO) |
                                                       (label_char == _ZERO + 1)))):
        return None
    label = np.where(has_label, label_char.astype(np.int16) - _ZERO, 0).astype(np.int8)
    dense = _dense_fields(buf, field_start[:, 1:1 + n_dense], length[:, 1:1 + n_dense])
    if dense is None:
        return None
    cats = _cat_fields(buf, field_start[:, 1 + n_dense:], length[:, 1 + n_dense:])
    if cats is None:
        return None
    values, missing = cats
    raw = RawColumns(label, dense.reshape(n, n_dense), values, missing,
                     np.zeros((n, 0), np.uint64), np.zeros((n, 0), np.int32))
    return RequestRows(raw, has_label)


def few_rows_pattern(layout: TextLayout) -> re.Pattern[bytes]:
    """One row of `layout` (without its line end): groups label (None when the row has no
    label), the dense fields, the categorical fields (None when empty)."""
    fields = [rb"(-?[0-9]{1,18})?"] * layout.n_dense + [rb"([0-9a-f]{8})?"] * layout.n_cats
    return re.compile(rb"(?:([01])\t)?" + rb"\t".join(fields))


def parse_few(body: bytes, layout: TextLayout) -> RequestRows | None:
    """`parse_body` by a regular expression per row: for bodies of a few rows, where the
    array operations' fixed cost dominates. Same rows taken, same columns."""
    pattern, n_dense, n_cats = layout.pattern, layout.n_dense, layout.n_cats
    labels: list[int] = []
    dense_cells: list[bytes | None] = []
    cat_cells: list[bytes | None] = []
    for line in body.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            continue
        match = pattern.fullmatch(line)
        if match is None:
            return None
        cells = match.groups()
        labels.append(-1 if cells[0] is None else cells[0][0] - _ZERO)
        dense_cells += cells[1:1 + n_dense]
        cat_cells += cells[1 + n_dense:]
    n = len(labels)
    if n == 0:
        return None
    # float() of the digits is float(int()) of them (both round the integer to nearest), but
    # for "-0": -0.0; adding 0.0 makes it 0.0, as the array parser has it
    dense = np.array([np.nan if c is None else float(c) for c in dense_cells], np.float64)
    dense += 0.0
    values = np.array([0 if c is None else int(c, 16) for c in cat_cells], np.uint64)
    missing = np.array([c is None for c in cat_cells], np.bool_)
    label = np.array(labels, dtype=np.int8)
    has_label = label >= 0
    raw = RawColumns(np.maximum(label, 0), dense.reshape(n, n_dense),
                     values.reshape(n, n_cats), missing.reshape(n, n_cats),
                     np.zeros((n, 0), np.uint64), np.zeros((n, 0), np.int32))
    return RequestRows(raw, has_label)


def _dense_fields(buf: npt.NDArray[np.uint8], start: npt.NDArray[np.intp],
                  length: npt.NDArray[np.intp]) -> npt.NDArray[np.float64] | None:
    """Integer fields `-?[0-9]{1,18}` or empty -> float64 (NaN when empty); None if any is
    not one of those. Fields of at most 8 digits (all of Criteo's, nearly) are read eight
    characters at once (`digits8_words`); a body with a longer one digit by digit."""
    if length.size == 0:
        return np.zeros(length.shape, dtype=np.float64)
    width = int(length.max())
    if width <= 9:
        negative = (length > 0) & (buf[start] == _MINUS)
        n_digits = length - negative
        if not np.any((length > 0) & ((n_digits < 1) | (n_digits > 8))):
            n_digits = np.where(length > 0, n_digits, 1)
            words = _words_at(buf, start + negative)
            words[length == 0] = _ZERO  # an empty field reads as "0" (then NaN)
            magnitude = digits8_words(words, n_digits)
            if magnitude is None:
                return None
            signed = magnitude.astype(np.int64)
            value = np.where(negative, -signed, signed).astype(np.float64)
            return np.where(length > 0, value, np.nan)
    if width > _INT_WIDTH:
        return None
    chars = _gather(buf, start, max(width, 1))
    negative = (length > 0) & (chars[..., 0] == _MINUS)
    n_digits = length - negative
    if np.any((length > 0) & ((n_digits < 1) | (n_digits > 18))):
        return None
    digits = chars - np.uint8(_ZERO)  # uint8: a non-digit wraps to > 9
    magnitude = np.zeros(length.shape, dtype=np.int64)
    for position in range(width):  # Horner over the character positions (a few)
        inside = (position < length) & ~((position == 0) & negative)
        digit = digits[..., position]
        if np.any(inside & (digit > 9)):
            return None
        magnitude = np.where(inside, magnitude * 10 + digit, magnitude)
    value = np.where(negative, -magnitude, magnitude).astype(np.float64)
    return np.where(length > 0, value, np.nan)


def _cat_fields(buf: npt.NDArray[np.uint8], start: npt.NDArray[np.intp],
                length: npt.NDArray[np.intp]
                ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]] | None:
    """Fields of 8 lowercase hex digits or empty -> (values, missing); None if any is not."""
    missing = length == 0
    if not np.all(missing | (length == 8)):
        return None
    words = _words_at(buf, start)
    words[missing] = _EIGHT_ZEROS  # the bytes after an empty field are no digits: "00000000"
    values = hex8_words(words)
    return None if values is None else (values, missing)


def _words_at(buf: npt.NDArray[np.uint8], start: npt.NDArray[np.intp]) -> npt.NDArray[np.uint64]:
    """The 8 bytes at each of `start` as one little-endian uint64 (first byte lowest); `buf`
    ends with at least 8 padding bytes."""
    every: npt.NDArray[np.uint64] = np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf,
                                               strides=(1,))  # one per byte offset
    return every[start]


_L = np.uint64(0x0101010101010101)
_EIGHT_ZEROS = np.uint64(0x3030303030303030)  # b"00000000"
_H = np.uint64(0x8080808080808080)
_LOW4 = np.uint64(0x0F0F0F0F0F0F0F0F)


def _at_least(words: npt.NDArray[np.uint64], byte: int) -> npt.NDArray[np.uint64]:
    """Per byte of `words` (each < 0x80): its high bit set where the byte is >= `byte`
    (<= 0x80). (b | 0x80) - byte never borrows from the next byte."""
    return ((words | _H) - np.uint64(byte) * _L) & _H


def hex8_words(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64] | None:
    """Eight ASCII characters per uint64 (first character in the lowest byte) read as 8
    lowercase hex digits, first digit most significant -> their value; None if any character
    of any word is not one of 0-9a-f. Eight characters at once per array operation (SWAR;
    with `digits8_words`, the 1,000-row parse went 3.9 -> 2.3 ms, bench/RESULTS-serving.md)."""
    if np.any(words & _H):  # a byte >= 0x80
        return None
    digit = _at_least(words, 0x30) & ~_at_least(words, 0x3A)
    letter = _at_least(words, 0x61) & ~_at_least(words, 0x67)
    if np.any((digit | letter) != _H):
        return None
    nibbles = (words & _LOW4) + (letter >> np.uint64(7)) * np.uint64(9)  # 'a' & 15 = 1 -> 10
    # bytes (n0 n1)(n2 n3)...: 16-bit lanes holding n_even << 4 | n_odd in their low byte
    pairs = ((nibbles & np.uint64(0x000F000F000F000F)) << np.uint64(4)) | (
        (nibbles >> np.uint64(8)) & np.uint64(0x000F000F000F000F))
    byte = np.uint64(0xFF)
    return (((pairs & byte) << np.uint64(24)) | (((pairs >> np.uint64(16)) & byte) << np.uint64(16))
            | (((pairs >> np.uint64(32)) & byte) << np.uint64(8)) | ((pairs >> np.uint64(48)) & byte))


_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], np.uint64)
_PAD_ZEROS = np.array([0x3030303030303030 & ((1 << (8 * (8 - n))) - 1) for n in range(9)],
                      np.uint64)  # b"0" in the 8 - n low bytes


def digits8_words(words: npt.NDArray[np.uint64], n_digits: npt.NDArray[np.intp]
                  ) -> npt.NDArray[np.uint64] | None:
    """The first `n_digits` (1 to 8) ASCII characters of each uint64 (first character in the
    lowest byte) read as a decimal number; None if any of those characters is not 0-9.
    The digits are moved to the high bytes and '0's put below them (so every word holds 8
    digits), checked and combined pairwise in three multiply-shift steps (SWAR)."""
    keep = 8 * (8 - n_digits).astype(np.uint64)
    padded = ((words & _LOW_BYTES[n_digits]) << keep) | _PAD_ZEROS[n_digits]
    high = np.uint64(0xF0F0F0F0F0F0F0F0)
    # every byte 0x30-0x39: high nibble 3, and still 3 after adding 6 (no byte carries over)
    if np.any(((padded & high) != _EIGHT_ZEROS)
              | (((padded + np.uint64(0x0606060606060606)) & high) != _EIGHT_ZEROS)):
        return None
    v = padded - _EIGHT_ZEROS  # digit values; the most significant in the lowest byte
    v = ((v * np.uint64(10)) + (v >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    v = ((v * np.uint64(100)) + (v >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    return ((v * np.uint64(10000)) + (v >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
