"""The pure core of the train stage: the Engine protocol, the window policy, progressive metrics.

Nothing here touches a socket, a file or the clock (times are passed in), and nothing imports
TensorFlow, Horovod, Redis or MLflow.
"""

from stages.train.core.engine_protocol import Engine, EngineConfig, TrainResult
from stages.train.core.metrics import WindowMetrics, auc, logloss, window_metrics
from stages.train.core.report import WindowReport
from stages.train.core.window import WindowPolicy

__all__ = [
    "Engine",
    "EngineConfig",
    "TrainResult",
    "WindowMetrics",
    "WindowPolicy",
    "WindowReport",
    "auc",
    "logloss",
    "window_metrics",
]
