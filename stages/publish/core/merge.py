"""Folding trainer exports into the model the next registry version will describe.

The publisher keeps two things between registrations: the materialized full model after every
trainer export folded so far (`FoldState.current`, numbered in the trainer's sequence space, so
the trainer's next delta applies onto it) and the merge of the trainer deltas folded since the
last registered version (`FoldState.delta`). A full trainer export (a trainer restart) resets
both and forces the next registry version to be full, since the registry's chain is broken.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from stages.common.errors import PublishError
from stages.common.model_export import ModelExport, apply_delta, upsert_rows


class ChainGap(PublishError):
    """A trainer delta does not apply onto what the publisher holds (an export was skipped)."""


def merge_deltas(older: ModelExport, newer: ModelExport) -> ModelExport:
    """One delta equivalent to applying `older` then `newer` onto older's base.

    Contract: `apply_delta(apply_delta(B, older), newer) == apply_delta(B, merge(older, newer))`
    for a full B with `B.export_seq == older.base_seq`. Rows: the union of changed ids, the newer
    row winning; evicted: the union of evicted ids minus the ids `newer` re-adds (an id that
    `older` added and `newer` evicts stays listed as evicted: harmless, it is absent from B).
    Dense weights and meta come from `newer`. ids are sorted. ContractError-style PublishError
    (`ChainGap`) when `newer` does not follow `older`.
    """
    if older.kind != "delta" or newer.kind != "delta":
        raise PublishError("merge_deltas takes two delta exports")
    if newer.base_seq != older.export_seq:
        raise ChainGap(f"delta {newer.export_seq} follows {newer.base_seq}, not {older.export_seq}")
    if newer.spec != older.spec:
        raise PublishError("the two deltas have different model specs")
    ids, rows = upsert_rows(older.ids, older.rows, newer.ids, newer.rows, newer.evicted)
    evicted = np.union1d(older.evicted, newer.evicted).astype(np.uint64)
    evicted = evicted[~np.isin(evicted, newer.ids)]
    return ModelExport(
        spec=newer.spec,
        kind="delta",
        export_seq=newer.export_seq,
        base_seq=older.base_seq,
        dense=dict(newer.dense),
        ids=ids,
        rows=rows,
        evicted=evicted,
        meta=dict(newer.meta),
    )


def renumber(export: ModelExport, export_seq: int, base_seq: int | None) -> ModelExport:
    """The same export under other sequence numbers (registry vs trainer numbering)."""
    return replace(export, export_seq=export_seq, base_seq=base_seq)


@dataclass(frozen=True)
class FoldState:
    """What the publisher holds between registrations.

    current: the full model after every folded export (trainer numbering), None before any.
    delta: merged trainer deltas since the last registration; None when nothing was folded or
    when `needs_full` (then a delta cannot describe the change). run_id/trainer_seq: the last
    folded export. folded: exports folded since the last registration. first_meta: the meta of
    the first of them (window ranges start there).
    """

    current: ModelExport | None = None
    delta: ModelExport | None = None
    needs_full: bool = True
    run_id: str | None = None
    trainer_seq: int | None = None
    folded: int = 0
    first_meta: dict[str, Any] | None = None

    @property
    def pending(self) -> bool:
        """True when exports were folded since the last registration."""
        return self.folded > 0


def fold(state: FoldState, export: ModelExport, run_id: str) -> FoldState:
    """Fold one trainer export (of trainer run `run_id`) into `state`.

    A full export always applies (and makes the next version full). A delta must follow the
    last folded export of the same run (`ChainGap` otherwise; the caller waits for the
    trainer's next full export).
    """
    first_meta = state.first_meta if state.folded else dict(export.meta)
    if export.kind == "full":
        return FoldState(export, None, True, run_id, export.export_seq, state.folded + 1, first_meta)
    if state.current is None or state.run_id != run_id or export.base_seq != state.trainer_seq:
        raise ChainGap(
            f"trainer delta {run_id}/{export.export_seq} applies onto export {export.base_seq}, "
            f"but the publisher holds {state.run_id}/{state.trainer_seq}; "
            "waiting for the trainer's next full export"
        )
    current = apply_delta(state.current, export)
    delta: ModelExport | None = None
    if not state.needs_full:
        delta = export if state.delta is None else merge_deltas(state.delta, export)
    return FoldState(
        current, delta, state.needs_full, run_id, export.export_seq, state.folded + 1, first_meta
    )


def registered(state: FoldState) -> FoldState:
    """The state right after the folded exports were registered as a version."""
    return replace(state, delta=None, needs_full=False, folded=0, first_meta=None)
