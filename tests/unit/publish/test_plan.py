"""Full-or-delta decisions, tags, the quality gate, rollback history, the serving chain."""

from __future__ import annotations

import pytest

from stages.common.errors import ContractError
from stages.common.export_meta import ExportMeta, ProgressiveMetrics, StoreRange
from stages.publish.core import plan
from stages.publish.core.plan import VersionInfo


def _info(version: int, kind: str = "delta", pos: int = 1, base: int | None = None,
          auc: float | None = 0.75) -> VersionInfo:
    return VersionInfo(version, kind, version, base, pos, "r", version, "sha", auc)  # type: ignore[arg-type]


def test_every_kth_version_is_full() -> None:
    kinds = []
    last = None
    for v in range(1, 8):
        kind = plan.next_kind(last, False, 3)
        pos = 0 if kind == "full" else last.chain_pos + 1  # type: ignore[union-attr]
        kinds.append(kind)
        last = _info(v, kind, pos)
    assert kinds == ["full", "delta", "delta", "full", "delta", "delta", "full"]
    assert plan.next_kind(_info(1, "full", 0), True, 3) == "full"
    assert plan.next_kind(_info(1, "full", 0), False, 1) == "full"


def _meta(first: int, last: int, auc: float | None) -> ExportMeta:
    return ExportMeta(
        window_first=first, window_last=last, samples=1200,
        store=StoreRange(stream_id="17-0", seq=17),
        metrics=ProgressiveMetrics(samples=100, positives=20, auc=auc, logloss=0.47),
        max_event_time_ms=1234,
    )


def test_tags_round_trip() -> None:
    meta = _meta(5, 9, 0.761).spanning(_meta(3, 4, 0.7))
    tags = plan.version_tags(
        kind="delta", publish_seq=4, base_version=7, chain_pos=2, run_id="abc",
        export_seq_first=3, export_seq=5, meta=meta, manifest_sha256="ff", published_at_ms=99,
    )
    assert tags[plan.T_WINDOW_FIRST] == "3" and tags[plan.T_WINDOW_LAST] == "9"
    assert tags[plan.T_STORE_POSITION] == "17-0/17"
    assert float(tags[plan.T_AUC]) == 0.761 and float(tags[plan.T_LOGLOSS]) == 0.47
    assert "none" not in tags.values()
    info = plan.parse_version(8, tags)
    assert info == VersionInfo(8, "delta", 4, 7, 2, "abc", 5, "ff", 0.761, 1234)
    bare = plan.version_tags(kind="full", publish_seq=1, base_version=None, chain_pos=0,
                             run_id="r", export_seq_first=1, export_seq=1,
                             meta=_meta(1, 1, None), manifest_sha256="aa", published_at_ms=1)
    assert plan.parse_version(1, bare).progressive_auc is None
    assert plan.T_BASE_VERSION not in bare and plan.T_AUC not in bare


def test_a_meta_of_another_shape_is_refused() -> None:
    with pytest.raises(ContractError, match="unknown field 'progressive_auc'"):
        ExportMeta.parse({**_meta(1, 2, 0.7).to_dict(), "progressive_auc": 0.7})
    with pytest.raises(ContractError, match="missing field 'metrics'"):
        ExportMeta.parse({"window_first": 1, "window_last": 2, "samples": 3,
                          "replay": {"file": "f", "rows": 3}})


def test_parse_version_names_the_missing_tag() -> None:
    with pytest.raises(ContractError, match="freshrec.kind is missing"):
        plan.parse_version(3, {})


def test_quality_gate() -> None:
    prod = _info(2, auc=0.75)
    assert plan.quality_gate(0.5, None, 0.01).passed
    assert plan.quality_gate(0.745, prod, 0.01).passed
    assert not plan.quality_gate(0.739, prod, 0.01).passed
    assert not plan.quality_gate(None, prod, 0.01).passed
    assert plan.quality_gate(None, _info(2, auc=None), 0.01).passed


def test_production_history() -> None:
    history = None
    for v in (1, 2, 2, 5):
        history = plan.push_history(history, v)
    assert history == "1,2,5"
    target, rest = plan.pop_history(history, 5)
    assert (target, rest) == (2, "1,2")
    with pytest.raises(ContractError, match="no earlier production"):
        plan.pop_history("1", 1)


def test_serving_chain() -> None:
    versions = {1: _info(1, "full", 0), 2: _info(2, base=1), 3: _info(3, base=2, pos=2),
                4: _info(4, "full", 0), 5: _info(5, base=4)}
    chain = plan.serving_chain(3, versions.__getitem__, None)
    assert [i.version for i in chain] == [1, 2, 3]
    assert [i.version for i in plan.serving_chain(3, versions.__getitem__, 2)] == [3]
    assert [i.version for i in plan.serving_chain(5, versions.__getitem__, 3)] == [4, 5]
    assert plan.serving_chain(5, versions.__getitem__, 5) == []
    broken = {**versions, 6: _info(6, base=None)}
    with pytest.raises(ContractError, match="names no base"):
        plan.serving_chain(6, broken.__getitem__, None)
