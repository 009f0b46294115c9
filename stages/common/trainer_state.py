"""The trainer's checkpoint state file, `<checkpoint dir>/ckpt-<window:010d>/state.json`.

The train stage owns and writes it (`stages.train.checkpoint.TrainerState` builds a
`CheckpointState`); `freshrec evaluate` on a checkpoint directory parses the same record to find
the trainer's exports in MLflow (`run_id`, `last_full_seq`, `export_seq`).

Schema version 1, compact JSON with exactly these fields:

    schema_version  1
    window          the last trained window (1-based; 0 before the first)
    samples         samples trained so far (all ranks)
    store           {"stream_id": "<ms>-<seq>", "seq": N}: the last sample-store entry trained
    replay_file     the replay file in progress (absolute path) or null
    replay_rows     its rows trained so far
    export_seq      the last export sequence number written (0: none yet)
    last_full_seq   the last full export's sequence number (0: none yet)
    run_id          the trainer's MLflow run id, or null before it has one
    world_size      the Horovod ranks that saved the engine state
    missed_blocks   blocks found trimmed before they were read, over the trainer's life
    feature_schema  the feature schema trained on, "<name>@<hash>" (`FeatureSchema.schema_id`);
                    absent in checkpoints written before schemas (then: Criteo's)

Checkpoints written before this contract carry `"version": 1` instead of `schema_version`; they
are read as schema version 1 (the fields are the same), so they stay resumable and evaluable.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stages.common.contract import Contract

CHECKPOINT_STATE_VERSION: Final = 1


class StorePointer(BaseModel):
    """The last sample-store entry read: its stream id ("ms-seq") and its block seq."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream_id: str
    seq: int = Field(ge=0)
    epoch: str | None = None  # the store incarnation it was read from; absent in old files


class CheckpointState(Contract):
    """Where the trainer was after window `window` (see the module docstring)."""

    RECORD: ClassVar[str] = "checkpoint state (ckpt-*/state.json)"

    schema_version: Literal[1] = CHECKPOINT_STATE_VERSION
    window: int = Field(ge=0)
    samples: int = Field(ge=0)
    store: StorePointer
    replay_file: str | None
    replay_rows: int = Field(ge=0)
    export_seq: int = Field(ge=0)
    last_full_seq: int = Field(ge=0)
    run_id: str | None
    world_size: int = Field(ge=1)
    missed_blocks: int = Field(ge=0)
    feature_schema: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_version(cls, data: Any) -> Any:
        # Files written before the contract: `"version": 1`, otherwise the same fields.
        if isinstance(data, dict) and "version" in data and "schema_version" not in data:
            data = {**data, "schema_version": data["version"]}
            del data["version"]
        return data
