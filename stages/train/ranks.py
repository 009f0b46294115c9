"""How the trainer's ranks agree: one rank (0) decides, the others follow.

Without Horovod (`engine.size == 1`) every operation is local. With Horovod the objects travel
through `horovod.tensorflow`'s object collectives; every rank must call each operation in the
same order (they are collective).
"""

from __future__ import annotations

from typing import Any, Protocol

from stages.common.errors import require


class Ranks(Protocol):
    rank: int
    size: int

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        ...

    def allgather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        ...

    def barrier(self) -> None:
        """Return once every rank has called it."""
        ...


class SingleRank:
    """One process: rank 0 of 1."""

    rank = 0
    size = 1

    def broadcast(self, obj: Any) -> Any:
        return obj

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]

    def barrier(self) -> None:
        return None


class HorovodRanks:
    """Ranks of an initialised Horovod job (the engine initialises Horovod)."""

    def __init__(self, rank: int, size: int) -> None:
        self.rank = rank
        self.size = size
        self._hvd: Any = require("horovod.tensorflow", "train")

    def broadcast(self, obj: Any) -> Any:
        return self._hvd.broadcast_object(obj, root_rank=0)

    def allgather(self, obj: Any) -> list[Any]:
        return list(self._hvd.allgather_object(obj))

    def barrier(self) -> None:
        self._hvd.allgather_object(self.rank)


def ranks_of(rank: int, size: int) -> Ranks:
    """SingleRank for a world of one, HorovodRanks otherwise."""
    return SingleRank() if size == 1 else HorovodRanks(rank, size)
