"""Full-or-delta decisions, tags, the quality gate, rollback history, the serving chain."""

from __future__ import annotations

import pytest

from stages.common.errors import ContractError
from stages.common.export_meta import ExportMeta, ProgressiveMetrics, ReplayRange, StoreRange
from stages.common.schema import load_schema
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


def _delta_tags() -> dict[str, str]:
    meta = ExportMeta(
        window_first=30, window_last=49, samples=4000,
        store=StoreRange(stream_id="4-0", seq=20),
        metrics=ProgressiveMetrics(samples=500, positives=100, auc=0.71234, logloss=0.45),
    )
    return plan.version_tags(
        kind="delta", publish_seq=3, base_version=2, chain_pos=2, run_id="run1",
        export_seq_first=3, export_seq=4, meta=meta, manifest_sha256="sha",
        published_at_ms=1,
    )


def test_version_description_from_tags_and_gate() -> None:
    tags = _delta_tags()
    pending = plan.version_description(tags, None)
    assert "delta against version 2" in pending and "position 2" in pending
    assert "Windows 30..49" in pending and "4000 samples" in pending
    assert "AUC 0.71234" in pending and "logloss 0.45000" in pending
    assert "exports 3..4" in pending and "`run1`" in pending
    assert "4-0/20" in pending and "not decided yet" in pending
    decision = plan.quality_gate(0.71234, _info(1, auc=0.75), 0.01)
    refused = plan.version_description(tags, decision)
    assert "Quality gate: refused (production stays): AUC 0.71234 < 0.74000 (production v1)" \
        in refused
    assert "not decided" not in refused
    passed = plan.version_description(tags, plan.GateDecision(True, "no production version yet"))
    assert "Quality gate: passed (production moved here): no production version yet" in passed
    # a gate tag reads back as the same decision
    assert plan.parse_gate(plan.gate_text(decision)) == decision


def test_version_description_of_a_full_version_without_auc() -> None:
    meta = ExportMeta(window_first=0, window_last=9, samples=10,
                      replay=ReplayRange(file="day_0.tsv", rows=10),
                      metrics=ProgressiveMetrics(samples=10, positives=0, auc=None, logloss=0.1))
    tags = plan.version_tags(
        kind="full", publish_seq=1, base_version=None, chain_pos=0, run_id="r",
        export_seq_first=1, export_seq=1, meta=meta, manifest_sha256="s", published_at_ms=1,
    )
    text = plan.version_description(tags, None)
    assert "Kind: full snapshot; publish_seq 1" in text and "`r`, export 1." in text
    assert "AUC undefined" in text and "store position" not in text
    assert "Replay rows read: 10." in text
    assert "none" not in text.lower()


def test_model_description() -> None:
    text = plan.model_description("m-ctr", "dcn_v2", 10)
    assert "CTR" in text and "`dcn_v2`" in text
    assert 'mlflow.pyfunc.load_model("models:/m-ctr@production")' in text
    assert "`production`" in text and "`latest`" in text
    assert "every 10-th version is a full snapshot" in text and "delta" in text
    assert "full snapshot" in plan.model_description("m", None, 1)
    assert plan.model_description("m", "wide_deep", 3) != plan.model_description("m", None, 3)
    assert "Criteo" not in text and "I1" not in text and "schema.json" in text


def test_model_description_names_the_schemas_fields() -> None:
    shop = load_schema("ecommerce").field_names()
    text = plan.model_description("m", "wide_deep", 3, shop)
    assert f"the columns {', '.join(shop)}." in text
    criteo = plan.model_description("m", "wide_deep", 3, load_schema("criteo").field_names())
    assert "the columns I1, I2," in criteo and "C26." in criteo
