"""What a valid value of each field kind is, in a delimited cell and in JSON, and the reason when
it is not. One definition for every parser (`rows`, `rows_arrow`), so "valid" means the same
thing in ingest, features, replay and serving.

Cells (tsv/csv; an empty cell is a missing value):
- label: `0` or `1` (never missing);
- dense int: `-?[0-9]{1,18}`; dense float: a decimal number (`-1.5`, `.5`, `2e-3`; no sign `+`,
  no nan/inf), at most 30 digits before and after the point, a 1-2 digit exponent;
- categorical hex: 1 to 8 hex digits (either case) -> their value; int: a 64-bit integer
  (`-2**63 .. 2**64-1`) -> uint64 (two's complement); str: any text -> `raw.string_value`;
- multi: values of the element type joined by the field's separator (the first max_len kept,
  the rest not looked at); an empty value inside the list is an error;
- event_id: `<source>:<seq>` (1-32 of [A-Za-z0-9_.-], ':', 1-19 digits), required when declared
  (the features stage drops re-sent events by it); event_time: digits, in the field's unit
  (ms, or s: multiplied by 1000), required when declared, below 10**18 ms.
JSON values: absent or null is missing; label 0/1/true/false; dense numbers (int fields take
integral numbers), hex a string of hex digits, int an integer, str a string or an integer (as
its decimal text); multi a JSON array (null elements are errors); event_id a string; event_time
a number (an integer for ms; seconds may have a fraction, floored to the ms).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any

from stages.common.raw import string_value
from stages.common.schema import (
    CategoricalField,
    DenseField,
    EventIdField,
    EventTimeField,
    LabelField,
    MultiField,
)

LABEL = r"[01]"
INT = r"-?[0-9]{1,18}"
FLOAT = r"-?(?:[0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})(?:[eE][-+]?[0-9]{1,2})?"
HEX = r"[0-9a-fA-F]{1,8}"
CAT_INT = r"-?[0-9]{1,20}"
EVENT_ID = r"[A-Za-z0-9_.\-]{1,32}:[0-9]{1,19}"
MAX_TIME_MS = 10**18
_MASK = (1 << 64) - 1

_INT, _FLOAT, _HEX = re.compile(INT), re.compile(FLOAT), re.compile(HEX)
_CAT_INT, _EVENT_ID = re.compile(CAT_INT), re.compile(EVENT_ID)
# Categorical values repeat (popular users, items): a bounded cache saves most blake2b calls.
_string_value = functools.lru_cache(maxsize=1 << 16)(string_value)


def time_pattern(field: EventTimeField) -> str:
    """The cell pattern of an event-time field (whole units)."""
    return r"[0-9]{1,18}" if field.unit == "ms" else r"[0-9]{1,15}"


class BadValue(ValueError):
    """A value that does not fit its field: the one-line reason, naming the field."""


def show(value: object, limit: int = 40) -> str:
    """A short repr of a bad value for a reason."""
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def _is_int(value: Any) -> bool:
    return type(value) is int  # not bool (a subclass of int)


class LabelRule:
    def __init__(self, field: LabelField) -> None:
        self.name = field.name

    def text(self, cell: str) -> int:
        if cell == "1" or cell == "0":
            return 1 if cell == "1" else 0
        raise BadValue(f"{self.name} must be 0 or 1, got {show(cell)}")

    def json(self, value: Any) -> int:
        if value is None:
            raise BadValue(f"{self.name} missing")
        if value is True or value is False or (_is_int(value) and value in (0, 1)):
            return int(value)
        raise BadValue(f"{self.name} must be 0 or 1, got {show(value)}")


class DenseRule:
    """-> float (NaN when missing)."""

    def __init__(self, field: DenseField) -> None:
        self.name, self.is_int = field.name, field.type == "int"

    def text(self, cell: str) -> float:
        if not cell:
            return math.nan
        if self.is_int:
            if _INT.fullmatch(cell):
                return float(int(cell))
            raise BadValue(f"{self.name} is not an integer: {show(cell)}")
        if _FLOAT.fullmatch(cell):
            return float(cell)
        raise BadValue(f"{self.name} is not a number: {show(cell)}")

    def json(self, value: Any) -> float:
        if value is None:
            return math.nan
        if _is_int(value):
            if abs(value) < MAX_TIME_MS:
                return float(value)
        elif isinstance(value, float) and math.isfinite(value):
            if not self.is_int or value.is_integer():
                return value
        kind = "an integer" if self.is_int else "a number"
        raise BadValue(f"{self.name} is not {kind}: {show(value)}")


def _no_hash(text: str) -> int:
    return 0


def cat_text(kind: str, name: str, cell: str, strings: Callable[[str], int] = _string_value) -> int:
    """A non-empty cell of a categorical value of `kind` -> its 64-bit value."""
    if kind == "str":
        return strings(cell)
    if kind == "hex":
        if _HEX.fullmatch(cell):
            return int(cell, 16)
        raise BadValue(f"{name} is not hex (1 to 8 digits): {show(cell)}")
    if _CAT_INT.fullmatch(cell) and -(1 << 63) <= (number := int(cell)) <= _MASK:
        return number & _MASK
    raise BadValue(f"{name} is not a 64-bit integer: {show(cell)}")


def cat_json(kind: str, name: str, value: Any, strings: Callable[[str], int] = _string_value) -> int:
    """A non-null JSON categorical value of `kind` -> its 64-bit value."""
    if kind == "str":
        if type(value) is str:
            return strings(value)
        if type(value) is int:
            return strings(str(value))
        raise BadValue(f"{name} is not a string: {show(value)}")
    if kind == "hex":
        if isinstance(value, str) and _HEX.fullmatch(value):
            return int(value, 16)
        raise BadValue(f"{name} is not hex (1 to 8 digits): {show(value)}")
    if _is_int(value) and -(1 << 63) <= value <= _MASK:
        return int(value) & _MASK
    raise BadValue(f"{name} is not a 64-bit integer: {show(value)}")


class CatRule:
    """-> int, or None when missing. hash_strings=False: every str value is 0 (validation
    only: ingest checks rows without computing their values)."""

    def __init__(self, field: CategoricalField, hash_strings: bool = True) -> None:
        self.name, self.kind = field.name, field.type
        self.strings = _string_value if hash_strings else _no_hash

    def text(self, cell: str) -> int | None:
        return cat_text(self.kind, self.name, cell, self.strings) if cell else None

    def json(self, value: Any) -> int | None:
        return None if value is None else cat_json(self.kind, self.name, value, self.strings)


class MultiRule:
    """-> the list's first max_len values (empty when missing); hash_strings as for CatRule."""

    def __init__(self, field: MultiField, hash_strings: bool = True) -> None:
        self.name, self.kind = field.name, field.type
        self.max_len, self.separator = field.max_len, field.separator
        self.strings = _string_value if hash_strings else _no_hash

    def text(self, cell: str) -> list[int]:
        if not cell:
            return []
        values = cell.split(self.separator, self.max_len)[: self.max_len]
        if "" in values:
            raise BadValue(f"{self.name} has an empty value: {show(cell)}")
        return [cat_text(self.kind, self.name, v, self.strings) for v in values]

    def json(self, value: Any) -> list[int]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise BadValue(f"{self.name} is not a list: {show(value)}")
        items = value[: self.max_len]
        if self.kind == "str":
            strings = self.strings
            values = [strings(item) for item in items if type(item) is str]
            if len(values) == len(items):
                return values
        out = []
        for i, item in enumerate(items):
            if item is None:
                raise BadValue(f"{self.name}[{i}] missing")
            out.append(cat_json(self.kind, f"{self.name}[{i}]", item, self.strings))
        return out


class EventIdRule:
    def __init__(self, field: EventIdField) -> None:
        self.name = field.name

    def text(self, cell: str) -> str:
        if not cell:
            raise BadValue(f"{self.name} missing")
        if _EVENT_ID.fullmatch(cell):
            return cell
        raise BadValue(f"{self.name} is not <source>:<seq> (1-32 of [A-Za-z0-9_.-], "
                       f"1-19 digits): {show(cell)}")

    def json(self, value: Any) -> str:
        if value is None:
            raise BadValue(f"{self.name} missing")
        if isinstance(value, str):
            return self.text(value)
        raise BadValue(f"{self.name} is not a string: {show(value)}")


class EventTimeRule:
    """-> epoch milliseconds."""

    def __init__(self, field: EventTimeField) -> None:
        self.name, self.scale = field.name, 1 if field.unit == "ms" else 1000
        self._pattern = re.compile(time_pattern(field))

    def text(self, cell: str) -> int:
        if not cell:
            raise BadValue(f"{self.name} missing")
        if self._pattern.fullmatch(cell):
            return int(cell) * self.scale
        raise BadValue(f"{self.name} is not a time in {self._unit}: {show(cell)}")

    def json(self, value: Any) -> int:
        if value is None:
            raise BadValue(f"{self.name} missing")
        ms = -1
        if _is_int(value):
            ms = value * self.scale
        elif isinstance(value, float) and self.scale > 1 and math.isfinite(value):
            ms = math.floor(value * self.scale)
        if 0 <= ms < MAX_TIME_MS:
            return int(ms)
        raise BadValue(f"{self.name} is not a time in {self._unit}: {show(value)}")

    @property
    def _unit(self) -> str:
        return "ms" if self.scale == 1 else "s"
