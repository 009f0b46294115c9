"""Folding trainer exports into the model the next registry version will describe.

The publisher keeps two full models between registrations: the model after every trainer
export folded so far (`FoldState.current`, numbered in the trainer's sequence space, so the
trainer's next delta applies onto it) and the model of the last registered version
(`FoldState.registered`). The next version's delta is the difference of the two
(`model_export.diff_exports`), so whether a version is full or delta is decided in one place,
`plan.next_kind`, never by how the trainer exported: a full trainer export (a trainer restart,
or its periodic resync) still becomes a small delta version.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from stages.common.errors import PublishError
from stages.common.model_export import ModelExport, apply_delta, diff_exports


class ChainGap(PublishError):
    """A trainer delta does not apply onto what the publisher holds (an export was skipped)."""


def renumber(export: ModelExport, export_seq: int, base_seq: int | None) -> ModelExport:
    """The same export under other sequence numbers (registry vs trainer numbering)."""
    return replace(export, export_seq=export_seq, base_seq=base_seq)


@dataclass(frozen=True)
class FoldState:
    """What the publisher holds between registrations.

    current: the full model after every folded export (trainer numbering), None before any.
    registered: the full model of the last registered version, None before the first (then the
    next version must be full). run_id/trainer_seq: the last folded export. folded: exports
    folded since the last registration. first_meta: the meta of the first of them (window
    ranges start there).
    """

    current: ModelExport | None = None
    registered: ModelExport | None = None
    run_id: str | None = None
    trainer_seq: int | None = None
    folded: int = 0
    first_meta: dict[str, Any] | None = None

    @property
    def pending(self) -> bool:
        """True when exports were folded since the last registration."""
        return self.folded > 0

    @property
    def needs_full(self) -> bool:
        """True when no version was registered yet: a delta has nothing to apply onto."""
        return self.registered is None

    @property
    def delta(self) -> ModelExport | None:
        """The change since the last registered version (None when there is none to diff
        against). Computed on each access: O(table) work."""
        if self.registered is None or self.current is None:
            return None
        return diff_exports(self.registered, self.current)


def fold(state: FoldState, export: ModelExport, run_id: str) -> FoldState:
    """Fold one trainer export (of trainer run `run_id`) into `state`.

    A full export always applies. A delta must follow the last folded export of the same run
    (`ChainGap` otherwise; the caller waits for the trainer's next full export).
    """
    first_meta = state.first_meta if state.folded else dict(export.meta)
    if export.kind == "full":
        current = export
    elif state.current is None or state.run_id != run_id or export.base_seq != state.trainer_seq:
        raise ChainGap(
            f"trainer delta {run_id}/{export.export_seq} applies onto export {export.base_seq}, "
            f"but the publisher holds {state.run_id}/{state.trainer_seq}; "
            "waiting for the trainer's next full export"
        )
    else:
        current = apply_delta(state.current, export)
    return replace(state, current=current, run_id=run_id, trainer_seq=export.export_seq,
                   folded=state.folded + 1, first_meta=first_meta)


def registered(state: FoldState) -> FoldState:
    """The state right after the folded exports were registered as a version."""
    return replace(state, registered=state.current, folded=0, first_meta=None)
