"""The registry retention decision (stages/publish/core/retention.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages.common.errors import ContractError
from stages.publish.core.plan import VersionInfo
from stages.publish.core.retention import retention_plan, trim_history


def registry(n: int, full_every: int, first_version: int = 1) -> list[VersionInfo]:
    """`n` versions as the publisher registers them: every `full_every`-th full, the others
    deltas onto the previous version."""
    out = []
    for i in range(n):
        pos = i % full_every
        version = first_version + i
        out.append(VersionInfo(
            version=version, kind="full" if pos == 0 else "delta", publish_seq=i + 1,
            base_version=None if pos == 0 else version - 1, chain_pos=pos, run_id="r",
            export_seq=i + 1, manifest_sha256="x",
        ))
    return out


def test_keeps_newest_with_their_chains_and_production() -> None:
    versions = registry(20, full_every=5)  # fulls: 1, 6, 11, 16
    plan = retention_plan(versions, keep_last=3, production=9, history="3,7,9")
    # newest 3 = 18, 19, 20 -> chain back to 16; production 9 -> 6..9; the history keeps its
    # last two (7, 9: one rollback step) and drops 3 (not among the newest)
    assert plan.keep == (6, 7, 8, 9, 16, 17, 18, 19, 20)
    assert plan.delete == (15, 14, 13, 12, 11, 10, 5, 4, 3, 2, 1)
    assert plan.history == "7,9"


def test_history_keeps_what_is_among_the_newest_and_its_last_two() -> None:
    versions = registry(20, full_every=5)
    plan = retention_plan(versions, keep_last=2, production=20, history="2,7,12,20")
    assert plan.history == "12,20"
    assert plan.keep == (11, 12, 16, 17, 18, 19, 20)
    plan = retention_plan(versions, keep_last=6, production=20, history="2,16,17,19,20")
    assert plan.history == "16,17,19,20"  # 15..20 are the newest six
    assert trim_history("1,2,3", {1, 2, 3}) is None
    assert trim_history("1,2,3", set()) == "2,3"
    assert trim_history("5,1,9", {5}) is None
    assert trim_history(None, {1}) is None


def test_zero_keeps_everything() -> None:
    versions = registry(7, full_every=3)
    plan = retention_plan(versions, keep_last=0, production=None, history=None)
    assert plan.keep == tuple(range(1, 8)) and plan.delete == () and plan.history is None


def test_newest_is_by_publish_seq_and_missing_pins_are_ignored() -> None:
    versions = registry(6, full_every=10, first_version=100)  # one chain 100..105
    plan = retention_plan(versions, keep_last=1, production=42, history="41,42")
    assert plan.keep == tuple(range(100, 106))  # 105 needs its whole chain
    assert plan.delete == ()


def test_errors() -> None:
    versions = registry(3, full_every=3)
    with pytest.raises(ContractError, match="keep_last"):
        retention_plan(versions, keep_last=-1, production=None, history=None)
    twice = [*versions, VersionInfo(9, "full", 3, None, 0, "r", 3, "x")]
    with pytest.raises(ContractError, match="publish_seq"):
        retention_plan(twice, keep_last=1, production=None, history=None)
    with pytest.raises(ContractError, match="history"):
        retention_plan(versions, keep_last=1, production=None, history="1,x")


@given(
    n=st.integers(1, 60), full_every=st.integers(1, 12), keep_last=st.integers(1, 20),
    pins=st.lists(st.integers(1, 60), max_size=6),
)
def test_every_kept_version_has_its_chain_and_deletion_order_keeps_it(
    n: int, full_every: int, keep_last: int, pins: list[int]
) -> None:
    versions = registry(n, full_every)
    by_version = {v.version: v for v in versions}
    history = ",".join(str(p) for p in pins)
    plan = retention_plan(versions, keep_last, pins[-1] if pins else None, history)
    assert set(plan.keep) | set(plan.delete) == set(by_version)
    assert not set(plan.keep) & set(plan.delete)
    assert set(range(max(1, n - keep_last + 1), n + 1)) <= set(plan.keep)
    history_after = plan.history if plan.history is not None else history
    assert history_after.split(",")[-2:] == history.split(",")[-2:]  # rollback: one step
    # beyond the newest, at most two pinned chains of at most full_every versions each
    assert len(plan.keep) <= min(n, keep_last + full_every - 1 + 2 * full_every)
    remaining = set(by_version)
    for version in (None, *plan.delete):  # after each deletion, every chain is complete
        if version is not None:
            remaining.discard(version)
        for v in remaining:
            info = by_version[v]
            if info.kind == "delta":
                assert info.base_version in remaining
