"""Registry retention: which versions stay, which go. Pure: no MLflow here.

A version stays when it is under `production`, in the (trimmed) production history that
rollback walks back through, or among the newest `keep_last` versions; and every version a kept
delta applies onto stays with it, back to its full version (`freshrec.base_version`, the chain
`plan.serving_chain` and the chain file follow), since a delta without its base loads nowhere.
Everything else goes, newest first: at every step of a deletion (or after one that stops half
way) each remaining version still has its whole chain.

The production history (what rollback walks back through) keeps the entries that are among the
newest `keep_last` versions, and always its last two (production and one step back, however old):
so rollback reaches any production version of the newest `keep_last`, and at least one step,
and what it pins beyond the newest versions is at most two chains. Keeping the whole history
(50 entries, plan.HISTORY_LIMIT) would pin up to 50 older chains, several times `keep_last`
versions. `keep_last = 0` keeps everything.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from stages.common.errors import ContractError
from stages.publish.core.plan import VersionInfo


@dataclass(frozen=True)
class RetentionPlan:
    """The outcome: versions kept (ascending), versions to delete in the order to delete them
    (newest first), and the production history to write back (None: leave it as it is)."""

    keep: tuple[int, ...]
    delete: tuple[int, ...]
    history: str | None


ROLLBACK_FLOOR = 2  # history entries always kept: production and the version before it


def trim_history(history: str | None, newest: Collection[int]) -> str | None:
    """The history tag with only the entries in `newest` plus its last ROLLBACK_FLOOR
    entries, in order; None when nothing changes."""
    items = [v for v in (history or "").split(",") if v]
    floor = len(items) - ROLLBACK_FLOOR
    kept = [v for i, v in enumerate(items) if i >= floor or _int(v, history) in newest]
    return None if kept == items else ",".join(kept)


def _int(value: str, history: str | None) -> int:
    try:
        return int(value)
    except ValueError:
        raise ContractError(f"malformed production history {history!r}") from None


def retention_plan(
    versions: Sequence[VersionInfo],
    keep_last: int,
    production: int | None,
    history: str | None,
) -> RetentionPlan:
    """Decide retention over `versions` (every freshrec version of the model, any order).

    Newest means highest publish_seq. `production` and the history entries are kept with their
    chains; one absent from `versions` (deleted by hand) is ignored. Raises ContractError when `keep_last` is negative or two versions share a
    publish_seq (the publisher never registers one twice; deleting either would be a guess).
    """
    if keep_last < 0:
        raise ContractError(f"keep_last must be >= 0, got {keep_last}")
    by_version = {v.version: v for v in versions}
    seqs = [v.publish_seq for v in versions]
    if len(set(seqs)) != len(seqs):
        raise ContractError("two registry versions share a publish_seq: not deleting any")
    if keep_last == 0:
        return RetentionPlan(tuple(sorted(by_version)), (), None)
    newest = {v.version for v in sorted(versions, key=lambda v: v.publish_seq)[-keep_last:]}
    trimmed = trim_history(history, newest)
    pinned = _history_versions(trimmed if trimmed is not None else history)
    if production is not None:
        pinned.add(production)
    keep = _with_chains(newest | pinned, by_version)
    delete = sorted((v for v in by_version if v not in keep),
                    key=lambda v: by_version[v].publish_seq, reverse=True)
    return RetentionPlan(tuple(sorted(keep & by_version.keys())), tuple(delete), trimmed)


def _history_versions(history: str | None) -> set[int]:
    return {_int(v, history) for v in (history or "").split(",") if v}


def _with_chains(roots: Iterable[int], by_version: dict[int, VersionInfo]) -> set[int]:
    """`roots` plus every version their chains apply onto (as far as they are registered)."""
    keep: set[int] = set()
    for root in roots:
        version: int | None = root
        while version is not None and version not in keep and version in by_version:
            keep.add(version)
            info = by_version[version]
            version = info.base_version if info.kind == "delta" else None
    return keep
