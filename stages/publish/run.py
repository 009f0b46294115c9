"""The publish stage's Python entrypoints, for flows and scripts (one import place).

`run_publisher(common, settings, *, once=False, interval_s=None, stop=None) -> PublishSummary`
(see `stages.publish.publisher`); serving is `stages.publish.serving.create_app`.
"""

from __future__ import annotations

from stages.publish.publisher import PublishSummary, run_publisher
from stages.publish.settings import PublishSettings

__all__ = ["PublishSettings", "PublishSummary", "run_publisher"]
