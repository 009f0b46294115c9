"""Scratch arrays kept per thread and reused from batch to batch (pure: memory only).

Ingest handles batches of megabytes; fresh memory of that size costs a page fault and a zeroing
for every 4 KiB it touches, which added up to a few tenths of a µs per row. A caller takes an
array by name, uses it, and must not hand it (or a view of it) out of the function that took
it: the next batch of the same thread overwrites it.
"""

from __future__ import annotations

import threading
from typing import TypeVar

import numpy as np
import numpy.typing as npt

T = TypeVar("T", bound=np.generic)


class _Arrays(threading.local):
    def __init__(self) -> None:
        self.by_name: dict[str, np.ndarray] = {}


_arrays = _Arrays()


def scratch(name: str, size: int, dtype: type[T]) -> npt.NDArray[T]:
    """An uninitialised array of `size` items of `dtype`, this thread's array called `name`."""
    array = _arrays.by_name.get(name)
    if array is None or array.dtype != dtype or len(array) < size:
        array = _arrays.by_name[name] = np.empty(size + size // 8, dtype=dtype)
    return array[:size]
