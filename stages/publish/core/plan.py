"""Decisions of the publisher and of serving: full or delta, the tags, the gate, the chain.

Registry versions carry their own sequence (`publish_seq`, 1, 2, ...): the registered export of
a version has `export_seq = publish_seq` and a delta's `base_seq` is the publish_seq of the
version it applies onto, whose registry version number is the tag `freshrec.base_version`.
`freshrec.chain_pos` counts versions since the last full one (0 for a full version).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from stages.common.errors import ContractError
from stages.common.export_meta import ExportMeta

TAG = "freshrec."
T_KIND = TAG + "kind"
T_PUBLISH_SEQ = TAG + "publish_seq"
T_BASE_VERSION = TAG + "base_version"
T_CHAIN_POS = TAG + "chain_pos"
T_RUN_ID = TAG + "trainer_run_id"
T_EXPORT_SEQ = TAG + "export_seq"
T_EXPORT_SEQ_FIRST = TAG + "export_seq_first"
T_WINDOW_FIRST = TAG + "window_first"
T_WINDOW_LAST = TAG + "window_last"
T_SAMPLES = TAG + "samples"
T_WINDOW_SAMPLES = TAG + "window_samples"
T_STORE_POSITION = TAG + "store_position"
T_REPLAY_ROWS = TAG + "replay_rows"
T_AUC = TAG + "progressive_auc"
T_LOGLOSS = TAG + "progressive_logloss"
T_NE = TAG + "progressive_ne"
T_MAX_EVENT_MS = TAG + "max_event_time_ms"
T_MANIFEST_SHA = TAG + "manifest_sha256"
T_PUBLISHED_MS = TAG + "published_at_ms"
T_GATE = TAG + "gate"
# On the registered model: production versions, oldest first, comma-separated (for rollback).
T_PRODUCTION_HISTORY = TAG + "production_history"
HISTORY_LIMIT = 50

Kind = Literal["full", "delta"]


@dataclass(frozen=True)
class VersionInfo:
    """What the publisher and serving need to know about one registry version (from its tags)."""

    version: int
    kind: Kind
    publish_seq: int
    base_version: int | None
    chain_pos: int
    run_id: str
    export_seq: int
    manifest_sha256: str
    progressive_auc: float | None = None
    max_event_time_ms: int | None = None


def _opt_float(value: str | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def parse_version(version: int, tags: dict[str, str]) -> VersionInfo:
    """VersionInfo from a version's tags; ContractError naming the tag when one is missing."""
    try:
        kind = tags[T_KIND]
        if kind not in ("full", "delta"):
            raise ContractError(f"version {version}: {T_KIND} is {kind!r}, not full or delta")
        base = tags.get(T_BASE_VERSION)
        max_ms = tags.get(T_MAX_EVENT_MS)
        return VersionInfo(
            version=int(version),
            kind="full" if kind == "full" else "delta",
            publish_seq=int(tags[T_PUBLISH_SEQ]),
            base_version=int(base) if base is not None else None,
            chain_pos=int(tags[T_CHAIN_POS]),
            run_id=tags[T_RUN_ID],
            export_seq=int(tags[T_EXPORT_SEQ]),
            manifest_sha256=tags[T_MANIFEST_SHA],
            progressive_auc=_opt_float(tags.get(T_AUC)),
            max_event_time_ms=int(max_ms) if max_ms is not None else None,
        )
    except KeyError as exc:
        raise ContractError(
            f"version {version} is not a freshrec version: tag {exc.args[0]} is missing"
        ) from None
    except ValueError as exc:
        raise ContractError(f"version {version} has a malformed tag: {exc}") from None


def next_kind(last: VersionInfo | None, needs_full: bool, full_every: int) -> Kind:
    """Full for the first version, when the chain is broken (`needs_full`), and for every
    `full_every`-th version (chain positions 0, 1, ..., full_every - 1, then 0 again)."""
    if last is None or needs_full or last.chain_pos + 1 >= full_every:
        return "full"
    return "delta"


def version_tags(
    *,
    kind: Kind,
    publish_seq: int,
    base_version: int | None,
    chain_pos: int,
    run_id: str,
    export_seq_first: int,
    export_seq: int,
    meta: ExportMeta,
    manifest_sha256: str,
    published_at_ms: int,
) -> dict[str, str]:
    """The tags of a new version. `meta`: the trainer meta of the exports folded into it (the
    window range of all of them, the rest from the newest; see `ExportMeta.spanning`). Every
    value is a number, an id or a position; a metric the window could not define (AUC of a
    one-class window) is left out, never written as "none"."""
    tags = {
        T_KIND: kind,
        T_PUBLISH_SEQ: str(publish_seq),
        T_CHAIN_POS: str(chain_pos),
        T_RUN_ID: run_id,
        T_EXPORT_SEQ_FIRST: str(export_seq_first),
        T_EXPORT_SEQ: str(export_seq),
        T_WINDOW_FIRST: str(meta.window_first),
        T_WINDOW_LAST: str(meta.window_last),
        T_SAMPLES: str(meta.samples),
        T_WINDOW_SAMPLES: str(meta.metrics.samples),
        T_MANIFEST_SHA: manifest_sha256,
        T_PUBLISHED_MS: str(published_at_ms),
    }
    if meta.store is not None:
        tags[T_STORE_POSITION] = f"{meta.store.stream_id}/{meta.store.seq}"
    if meta.replay is not None:
        tags[T_REPLAY_ROWS] = str(meta.replay.rows)
    optional = {
        T_AUC: meta.metrics.auc,
        T_LOGLOSS: meta.metrics.logloss,
        T_NE: meta.metrics.ne,
        T_MAX_EVENT_MS: meta.max_event_time_ms,
        T_BASE_VERSION: base_version,
    }
    tags.update({k: _number(v) for k, v in optional.items() if v is not None})
    return tags


def _number(value: float | int) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


@dataclass(frozen=True)
class GateDecision:
    """Whether `production` may move to the candidate, and why (for a tag and the log)."""

    passed: bool
    reason: str


def quality_gate(
    candidate_auc: float | None, production: VersionInfo | None, tolerance: float
) -> GateDecision:
    """Pass when there is no production version, when production has no AUC to compare, or
    when `candidate_auc >= production_auc - tolerance`. A candidate without an AUC fails
    against a production version that has one."""
    if production is None:
        return GateDecision(True, "no production version yet")
    if production.progressive_auc is None:
        return GateDecision(True, f"production v{production.version} has no progressive AUC")
    if candidate_auc is None:
        return GateDecision(False, "the candidate has no progressive AUC")
    floor = production.progressive_auc - tolerance
    if candidate_auc >= floor:
        return GateDecision(
            True, f"AUC {candidate_auc:.5f} >= {floor:.5f} (production v{production.version})"
        )
    return GateDecision(
        False, f"AUC {candidate_auc:.5f} < {floor:.5f} (production v{production.version})"
    )


def push_history(history: str | None, version: int) -> str:
    """The production history tag after `version` became production (bounded length)."""
    items = [v for v in (history or "").split(",") if v]
    if not items or items[-1] != str(version):
        items.append(str(version))
    return ",".join(items[-HISTORY_LIMIT:])


def pop_history(history: str | None, current: int | None) -> tuple[int, str]:
    """Rollback: the previous production version and the history without the current one.

    ContractError when there is no earlier production version to go back to."""
    items = [v for v in (history or "").split(",") if v]
    if current is not None and items and items[-1] == str(current):
        items.pop()
    if not items:
        raise ContractError("no earlier production version to roll back to")
    return int(items[-1]), ",".join(items)


def serving_chain(
    target: int, info: Callable[[int], VersionInfo], have: int | None, limit: int = 10_000
) -> list[VersionInfo]:
    """The versions to apply, in order, to reach `target`: from its last full version, or from
    just after `have` (the version already materialized) when `have` is on target's chain.

    Returns [] when `target == have`. ContractError on a chain longer than `limit` or with a
    delta whose base is missing.
    """
    chain: list[VersionInfo] = []
    version: int | None = target
    while version is not None and version != have:
        current = info(version)
        chain.append(current)
        if current.kind == "full":
            break
        if current.base_version is None:
            raise ContractError(f"delta version {version} names no base version")
        if len(chain) > limit:
            raise ContractError(f"the chain of version {target} is longer than {limit}")
        version = current.base_version
    return chain[::-1]


def gate_text(decision: GateDecision) -> str:
    """The `freshrec.gate` tag of a decision: `passed: <reason>` or `refused: <reason>`."""
    return ("passed: " if decision.passed else "refused: ") + decision.reason


def parse_gate(text: str) -> GateDecision:
    """The decision a `freshrec.gate` tag holds (see `gate_text`)."""
    verdict, _, reason = text.partition(": ")
    return GateDecision(verdict == "passed", reason or text)


def model_description(
    name: str, model_type: str | None, full_every: int, field_names: Sequence[str] = ()
) -> str:
    """The registered model's description (Markdown, as MLflow's UI shows it): what the model
    is, how versions relate, its aliases and how to load it. `model_type`: of the newest
    version (None before the first one); `field_names`: the input fields of its feature schema
    (`FeatureSchema.field_names()`; empty: not named)."""
    kind = model_type or "not known yet (set with the first version)"
    columns = (f"the columns {', '.join(field_names)}" if field_names else
               "a column per input field of the version's feature schema (its `schema.json`)")
    cadence = (
        "every version is a full snapshot" if full_every <= 1 else
        f"every {full_every}-th version is a full snapshot, the others are deltas against the "
        "previous version"
    )
    return "\n".join([
        f"**{name}**: a freshrec click-through-rate (CTR) model, trained online on a stream "
        "of events of its feature schema and published by the freshrec publisher.",
        "",
        f"- Model type: `{kind}`.",
        f"- Versions: each is full (the whole model) or a delta (embedding rows changed, "
        f"added and evicted, plus all dense weights) against the previous version; {cadence}. "
        "Every version loads as a complete MLflow pyfunc model (a delta carries its chain).",
        "- Aliases: `production` is the newest version that passed the quality gate "
        "(progressive AUC not below production's minus the tolerance); the newest version is "
        "`latest` (MLflow resolves it: `models:/<name>/latest`).",
        f'- Load: `mlflow.pyfunc.load_model("models:/{name}@production")`, then '
        f"`predict` on a DataFrame with {columns}.",
        "- Each version's description and `freshrec.*` tags give its windows, samples, "
        "metrics, store position and gate decision.",
    ])


def version_description(tags: dict[str, str], gate: GateDecision | None) -> str:
    """A version's description (Markdown) from its tags and gate decision (None: not decided
    yet): kind and base, trainer exports, window range, samples, progressive AUC/logloss,
    store position or replay rows, and the gate."""
    kind = tags.get(T_KIND, "?")
    base = tags.get(T_BASE_VERSION)
    if kind == "delta":
        what = f"delta against version {base}" if base else "delta"
        what += f" (position {tags.get(T_CHAIN_POS, '?')} after the last full version)"
    else:
        what = "full snapshot"

    def metric(key: str) -> str:
        value = _opt_float(tags.get(key))
        return "undefined" if value is None else f"{value:.5f}"

    first, last = tags.get(T_EXPORT_SEQ_FIRST), tags.get(T_EXPORT_SEQ)
    exports = f"exports {first}..{last}" if first and first != last else f"export {last}"
    lines = [
        f"- Kind: {what}; publish_seq {tags.get(T_PUBLISH_SEQ, '?')}.",
        f"- Trainer run `{tags.get(T_RUN_ID, '?')}`, {exports}.",
        f"- Windows {tags.get(T_WINDOW_FIRST, '?')}..{tags.get(T_WINDOW_LAST, '?')}; "
        f"{tags.get(T_SAMPLES, '?')} samples trained in total.",
        f"- Progressive validation of the last window ({tags.get(T_WINDOW_SAMPLES, '?')} "
        f"samples, scored before training on them): AUC {metric(T_AUC)}, "
        f"logloss {metric(T_LOGLOSS)}.",
    ]
    if T_STORE_POSITION in tags:
        lines.append(f"- Feature-store position (stream id/block seq): "
                     f"{tags[T_STORE_POSITION]}.")
    if T_REPLAY_ROWS in tags:
        lines.append(f"- Replay rows read: {tags[T_REPLAY_ROWS]}.")
    if gate is None:
        lines.append("- Quality gate: not decided yet.")
    else:
        verdict = "passed (production moved here)" if gate.passed else "refused (production stays)"
        lines.append(f"- Quality gate: {verdict}: {gate.reason}.")
    return "\n".join(lines)
