"""Wake-up hints on a real Redis and MLflow server: the trainer's export (TrainerTracking, its
outbox and its notifier) wakes a publisher that polls once a minute, whose version wakes a
serving follower that polls once a minute; with Redis away both still follow by polling."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infra.services import free_port
from stages.common.model_export import ModelSpec, apply_delta
from stages.common.settings import CommonSettings
from stages.publish.publisher import PublishSummary, run_publisher
from stages.publish.registry import Registry
from stages.publish.serving import ModelFollower
from stages.publish.settings import PublishSettings
from stages.publish.synthetic import delta_export, full_export, synthetic_meta
from stages.publish.wakeup import Wakeup, versions_channel
from stages.train.settings import TrainSettings
from stages.train.tracking import TrainerTracking

pytestmark = pytest.mark.integration
SPEC = ModelSpec("wide_deep", 4, (8,))


class Chain:
    """A trainer's tracking, a publisher thread and a serving follower on one settings."""

    def __init__(self, common: CommonSettings, work: Path, poll_s: float) -> None:
        self.tracking = TrainerTracking.open(common, None, "hinted-trainer", {}, TrainSettings())
        self.tracking.start()
        self.stop = threading.Event()
        self.summary: list[PublishSummary] = []
        self.publisher = threading.Thread(target=lambda: self.summary.append(run_publisher(
            common, PublishSettings(full_every=3), interval_s=poll_s, stop=self.stop)))
        self.wakeup = Wakeup.from_settings(
            common, versions_channel(common.redis_namespace, common.model_name), "test-serving")
        self.follower = ModelFollower(Registry(common), "latest", work, poll_s, self.wakeup)
        self.publisher.start()
        self.follower.start()

    def served_within(self, version: int, seconds: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            model = self.follower.current
            if model is not None and model.version == str(version):
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"v{version} not served within {seconds} s "
                             f"(last error: {self.follower.last_error})")

    def close(self) -> None:
        self.follower.stop()
        self.stop.set()
        self.publisher.join(30)
        self.tracking.finish()
        if self.wakeup is not None:
            self.wakeup.close()


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Callable[..., Chain]]:
    made: list[Chain] = []

    def make(common: CommonSettings, poll_s: float) -> Chain:
        work = tmp_path / f"serve{len(made)}"
        work.mkdir()
        made.append(Chain(common, work, poll_s))
        return made[-1]

    yield make
    for c in made:
        c.close()


def test_hints_carry_an_export_to_serving_in_seconds(
    make_settings: Callable[..., CommonSettings], chain: Callable[..., Chain], redis_server: str,
) -> None:
    c = chain(make_settings("mlflow", "redis"), 60.0)
    time.sleep(3)  # the publisher's and the follower's first polls find nothing; then 60 s
    rng = np.random.default_rng(0)
    model = full_export(SPEC, rng, n_rows=300, seq=1, meta=synthetic_meta(1))
    c.tracking.log_export(model)
    assert c.served_within(1, 20) < 20  # a minute's poll could not have done it
    delta = delta_export(model, rng, change=0.1, add=5, seq=2, meta=synthetic_meta(2))
    c.tracking.log_export(delta)
    c.served_within(2, 20)
    served = c.follower.current
    assert served is not None
    expected = apply_delta(model, delta)
    order = np.argsort(expected.ids)
    np.testing.assert_array_equal(served.export.ids, expected.ids[order])
    assert c.wakeup is not None and c.wakeup.hints >= 2
    notifier = c.tracking.notifier
    assert notifier is not None and notifier.sent == 2 and notifier.failures == 0


def test_without_redis_everything_still_follows_by_polling(
    make_settings: Callable[..., CommonSettings], chain: Callable[..., Any],
) -> None:
    common = make_settings("mlflow", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    c = chain(common, 0.5)
    rng = np.random.default_rng(1)
    c.tracking.log_export(full_export(SPEC, rng, n_rows=300, seq=1, meta=synthetic_meta(1)))
    c.served_within(1, 30)
    notifier = c.tracking.notifier
    assert notifier is not None and notifier.failures == 1 and notifier.sent == 0
