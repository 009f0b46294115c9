"""The trainer's plots: window AUC/logloss and the embedding table size, as PNGs for MLflow.

`WindowHistory` keeps the last `limit` windows of this process in memory (a restarted trainer
starts a new history; MLflow's metric charts keep the whole run). `render_plots` draws a
snapshot of it with matplotlib's object API on the Agg canvas: no pyplot, no global figure
state, so it is safe in the tracking outbox's sender thread, where it runs.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.common.errors import require
from stages.train.core.report import WindowReport

PROGRESSIVE_PNG = "progressive_metrics.png"
TABLE_PNG = "table_size.png"
ARTIFACT_DIR = "plots"  # the run's artifacts plots/progressive_metrics.png, plots/table_size.png


@dataclass(frozen=True)
class WindowPoint:
    """One window in the history. auc/logloss: progressive validation (nan: undefined, e.g. a
    window with one class); table_size: admitted ids after the window."""

    window: int
    auc: float
    logloss: float
    table_size: int
    samples_per_second: float


class WindowHistory:
    """The last `limit` windows added, oldest first (the oldest is dropped beyond it)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self._points: deque[WindowPoint] = deque(maxlen=limit)

    def add(self, report: WindowReport) -> None:
        m = report.metrics
        self._points.append(WindowPoint(report.window, m.auc, m.logloss, report.table_size,
                                        report.samples_per_second))

    def snapshot(self) -> tuple[WindowPoint, ...]:
        """A copy, safe to hand to another thread."""
        return tuple(self._points)

    def __len__(self) -> int:
        return len(self._points)


def render_plots(points: tuple[WindowPoint, ...], directory: Path) -> list[Path]:
    """Write `PROGRESSIVE_PNG` (AUC and logloss by window, two axes) and `TABLE_PNG` (admitted
    ids by window) into `directory`; returns their paths. nan values leave a gap in the line.
    An empty history gives plots with no line."""
    require("matplotlib", "train")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    windows = [p.window for p in points]
    span = f"windows {windows[0]}..{windows[-1]}" if windows else "no windows yet"

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(windows, [p.auc for p in points], color="tab:blue", label="AUC")
    ax.set_xlabel("window")
    ax.set_ylabel("AUC (progressive)", color="tab:blue")
    _limits(ax, [p.auc for p in points])
    loss = ax.twinx()
    loss.plot(windows, [p.logloss for p in points], color="tab:red", label="logloss")
    loss.set_ylabel("logloss (progressive)", color="tab:red")
    _limits(loss, [p.logloss for p in points])
    ax.set_title(f"Window AUC and logloss, scored before training ({span})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    progressive = directory / PROGRESSIVE_PNG
    fig.savefig(progressive, format="png")

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(windows, [p.table_size for p in points], color="tab:green")
    ax.set_xlabel("window")
    ax.set_ylabel("admitted ids")
    ax.set_title(f"Embedding table size ({span})")
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    table = directory / TABLE_PNG
    fig.savefig(table, format="png")
    return [progressive, table]


def _limits(ax: Any, values: list[float]) -> None:
    """A little room around the finite values (matplotlib warns on an all-nan range)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return
    lo, hi = min(finite), max(finite)
    pad = (hi - lo) * 0.05 or 0.01
    ax.set_ylim(lo - pad, hi + pad)
