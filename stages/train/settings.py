"""Settings of the train stage, env prefix `FRESHREC_TRAIN_`.

The checkpoint directory is the shared `FRESHREC_CHECKPOINT_DIR` (`CommonSettings.checkpoints`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode

from stages.common.layout import compile_layout
from stages.common.model_export import ModelSpec
from stages.common.schema import FeatureSchema, load_schema
from stages.common.settings import settings_config
from stages.train.core.batch_policy import AdaptiveBatch
from stages.train.core.engine_protocol import EngineConfig
from stages.train.core.window import WindowPolicy


class TrainSettings(BaseSettings):
    """The resident trainer: model, optimizer, windows, checkpoints, exports."""

    model_config = settings_config("train")

    model_type: Literal["wide_deep", "dcn"] = Field(
        "wide_deep", description="Network: wide_deep (Wide&Deep) or dcn (DCN-v2)."
    )
    embedding_dim: int = Field(
        16, ge=1, le=1024, description="Embedding dimension d (of every field whose schema "
        "entry declares no dim).",
    )
    hidden_units: Annotated[tuple[int, ...], NoDecode] = Field(
        (128, 64), description="Deep MLP layer sizes, comma-separated (e.g. 128,64)."
    )
    cross_layers: int = Field(
        1, ge=0, le=16, description="DCN cross layers (dcn only; 1 measured best on Criteo)."
    )
    optimizer: Literal["adagrad", "adam", "sgd"] = Field(
        "adagrad", description="Optimizer of dense weights and embeddings."
    )
    learning_rate: float = Field(
        0.05, gt=0, le=10, description="Learning rate (DCN cross weights use 0.1x this)."
    )
    l2: float = Field(0.0, ge=0, description="L2 penalty on the looked-up embedding rows.")
    # Held-out AUC of W&D, lr 0.05, one pass, seeds 0-2, two splits of the real Criteo sample
    # (bench/RESULTS-train.md, "Quality at the defaults"), mean of the splits: batch 16 0.7393,
    # 64 0.7400, 128 0.7412, 256 0.7422, 512 0.7425, 1,024 0.7394, 4,096 0.7060; 256 trains
    # ~6x the samples/s of 16. Smaller was better only while a window's short last mini-batch
    # took a full-size step (fixed: every row weighs the same, `engine.NOMINAL_BATCH_LOSS`).
    batch_size: int = Field(
        256, ge=1, le=1 << 20, description="Mini-batch size in a window (256: the best "
        "held-out AUC measured, with batch 512; 16 learns no better and trains ~6x slower)."
    )
    # Training samples/s on the same runs: 256 ~37k, 512 ~46k, 1,024 ~64k (RESULTS-train.md);
    # held-out AUC 1,024 -0.003 against 256. Only while samples wait (core.batch_policy).
    batch_size_max: int = Field(
        1024, ge=1, le=1 << 20, description="Largest mini-batch while samples wait: the batch "
        "doubles while more than 2 windows wait in the feature store and halves back once "
        "fewer than 1 does (each change logged); = FRESHREC_TRAIN_BATCH_SIZE turns it off."
    )
    window_samples: int = Field(
        8192, ge=1, description="A window closes once it holds this many samples (N)..."
    )
    window_seconds: float = Field(
        30.0, gt=0, description="...or this many seconds after its first sample (T)."
    )
    checkpoint_every: int = Field(
        5, ge=1, description="Checkpoint every K windows (written by a thread while training "
        "goes on; one falling due while another is written waits for it)."
    )
    # A checkpoint costs ~1-2 s of CPU and ~230 MB of writes at the default capacity; at
    # 20,000 events/s 5 windows are 2 s, so the windows alone would keep a writer busy always.
    checkpoint_min_interval_s: float = Field(
        30.0, ge=0, description="...and at least this many seconds after the previous one "
        "(bounds the retraining after a crash to max(K windows, this long) of samples)."
    )
    checkpoints_kept: int = Field(3, ge=1, le=100, description="Complete checkpoints kept.")
    export_every: int = Field(5, ge=1, description="Export the model every E windows...")
    # Each export becomes a registry version that MLflow stores, the publisher folds and
    # serving downloads: at 12,500 events/s (a version every ~3 s) they took ~70 % of a core
    # of the 2 (bench/RESULTS-capacity.md); 5 s keeps freshness well under its 30-s bound.
    export_min_interval_s: float = Field(
        5.0, ge=0, description="...and at least this many seconds after the previous export "
        "(caps registry versions at 12 a minute however fast samples come)."
    )
    full_export_every: int = Field(
        10, ge=1, description="Every F-th trainer export is full, the others deltas. Only a "
        "resync point for a publisher that missed an export: registry versions are full or "
        "delta by FRESHREC_PUBLISH_FULL_EVERY alone."
    )
    table_capacity: int = Field(
        1_000_000, ge=1, description="Max admitted embedding ids over all shards."
    )
    admit_after: int = Field(2, ge=1, description="An id gets its own row once seen this often.")
    evict_after_steps: int = Field(
        50_000, ge=0, description="Evict ids unseen for this many steps (0: never by age)."
    )
    seed: int = Field(0, ge=0, description="Random seed of the model's initial weights.")
    prior_ctr: float = Field(
        0.25, gt=0, lt=1, description="Click rate a new model predicts before any training."
    )
    read_count: int = Field(
        64, ge=1, le=10_000, description="Sample blocks fetched per Redis read."
    )
    tracking_max_exports: int = Field(
        20, ge=1, le=10_000, description="Exports kept waiting for MLflow (spilled to "
        "<state dir>/train/outbox); when this many wait, the trainer skips exporting (logged, "
        "counted) until MLflow takes them.",
    )
    tracking_max_records: int = Field(
        10_000, ge=1, le=10_000_000, description="Metric/tag records queued in memory while "
        "MLflow is away; beyond it the oldest is dropped (counted).",
    )
    tracking_http_timeout_s: int = Field(
        10, ge=1, le=600, description="Socket timeout of one MLflow request of the trainer "
        "(MLFLOW_HTTP_REQUEST_TIMEOUT unless that is set).",
    )
    tracking_http_retries: int = Field(
        1, ge=0, le=10, description="MLflow's own retries of one request of the trainer "
        "(MLFLOW_HTTP_REQUEST_MAX_RETRIES unless set); the outbox retries beyond that.",
    )
    tracking_backoff_max_s: float = Field(
        30.0, gt=0, le=3600, description="Longest wait between the outbox's retries."
    )
    tracking_flush_s: float = Field(
        60.0, ge=0, le=3600, description="Seconds a stopping trainer waits for queued "
        "tracking to reach MLflow (exports left stay spilled for the next start).",
    )
    notify_exports: bool = Field(
        True, description="After each export upload, send the publisher a wake-up hint on "
        "Redis pub/sub so that it publishes at once (off: the publisher finds exports at its "
        "next poll).",
    )
    consumer_name: str = Field(
        "trainer",
        pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
        description="Name of this trainer (MLflow run name; one trainer per checkpoint dir).",
    )
    plot_every: int = Field(
        20, ge=0, le=1_000_000, description="Refresh the plots of window AUC/logloss and table "
        "size (PNG artifacts plots/*.png of the trainer's MLflow run) every K windows, and at "
        "the end (0: at the end only).",
    )
    plot_history: int = Field(
        5000, ge=10, le=1_000_000, description="Windows the plots show (the newest; kept in "
        "memory, so a restarted trainer's plots start again).",
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve Prometheus metrics at "
        "http://127.0.0.1:PORT/metrics (rank 0; unset: off).",
    )

    @field_validator("hidden_units", mode="before")
    @classmethod
    def _units(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            try:
                return tuple(int(p) for p in parts)
            except ValueError:
                raise ValueError(f"must be comma-separated integers, got {value!r}") from None
        if isinstance(value, int):
            return (value,)
        return value

    def model_spec(self, schema: FeatureSchema | None = None) -> ModelSpec:
        """The ModelSpec on `schema`'s layout (`common.schema()`; None: the Criteo preset),
        cross layers only for dcn; ValueError if inconsistent."""
        layout = compile_layout(schema or load_schema("criteo"), self.embedding_dim)
        return ModelSpec.from_layout(
            layout,
            self.model_type,
            self.hidden_units,
            self.cross_layers if self.model_type == "dcn" else 0,
        )

    def engine_config(self, schema: FeatureSchema | None = None) -> EngineConfig:
        """What the engine is built from (`model_spec(schema)`)."""
        return EngineConfig(
            spec=self.model_spec(schema),
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            optimizer=self.optimizer,
            l2=self.l2,
            table_capacity=self.table_capacity,
            admit_after=self.admit_after,
            evict_after_steps=self.evict_after_steps,
            seed=self.seed,
            prior_ctr=self.prior_ctr,
        )

    def batch_policy(self) -> AdaptiveBatch:
        """The mini-batch of each window: `batch_size`, up to `batch_size_max` under backlog."""
        return AdaptiveBatch(self.batch_size, max(self.batch_size_max, self.batch_size),
                             self.window_samples)

    def window_policy(self, *, replay: bool = False) -> WindowPolicy:
        """N samples or T seconds; a replay closes on samples only, to be deterministic."""
        return WindowPolicy(
            self.window_samples, float("inf") if replay else self.window_seconds
        )
