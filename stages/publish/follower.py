"""Serving's model follower: the version under an alias, downloaded, verified and swapped in.

`ModelFollower` checks the alias every `poll_s` seconds, and at once when the publisher
announces a version (`wakeup.Wakeup`, optional: a hint only, the poll goes on). On a new
version it downloads the versions it lacks (from the one it holds when that is on the chain,
else from the last full), verifies every checksum, applies the deltas in order and replaces its
`LoadedModel` in one assignment. A request reads that reference once, so a request in flight
finishes on the model it started with. A corrupt or incomplete version is refused with an error
log line and serving keeps its version.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from stages.common.errors import ContractError, FreshrecError
from stages.common.model_export import non_finite
from stages.common.settings import redact_text
from stages.publish.core.plan import T_PUBLISHED_MS
from stages.publish.loaded import LoadedModel
from stages.publish.registry import Registry
from stages.publish.wakeup import Wakeup

log = logging.getLogger(__name__)


class ModelFollower:
    """Follows `alias` of the registered model; `current` is the model to serve (or None)."""

    def __init__(
        self, registry: Registry, alias: str, work: Path, poll_s: float,
        wakeup: Wakeup | None = None,
    ) -> None:
        self.registry = registry
        self.wakeup = wakeup  # the publisher's "version created / promoted" hints (its owner closes it)
        self.alias = alias
        self.work = work
        self.poll_s = poll_s
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        # (version, its freshrec.published_at_ms tag): the staleness of `current`
        self._published: tuple[str, int | None] = ("", None)
        self._refused: int | None = None
        self.swaps = 0
        self.swap_failures: dict[str, int] = {"refused": 0, "error": 0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> bool:
        """Check the alias once; True when a new model was swapped in. Never raises a
        FreshrecError: failures are logged and kept in `last_error`."""
        try:
            version = self.registry.alias_version(self.alias)
            held = self.current
            if version is None or (held and held.version == str(version)):
                return False
            if version == self._refused:
                return False
            have = (int(held.version), held.export) if held else None
            started = time.monotonic()
            export = self.registry.materialize(version, self.work, have)
            diverged = non_finite(export)
            if diverged is not None:
                raise ContractError(diverged)
            schema = self.registry.served_schema(version, export.spec, self.work)
        except ContractError as exc:
            self.swap_failures["refused"] += 1
            self._refused = version
            self.last_error = redact_text(f"version {version} refused: {exc}")
            log.error("refusing %s@%s v%s: %s; still serving v%s", self.registry.name,
                      self.alias, version, redact_text(str(exc)),
                      self.current.version if self.current else "none")
            return False
        except FreshrecError as exc:
            self.swap_failures["error"] += 1
            self.last_error = redact_text(str(exc))
            log.warning("could not follow %s@%s: %s", self.registry.name, self.alias,
                        self.last_error)
            return False
        self._published = (str(version), self._published_at_ms(version))
        self.current = LoadedModel(export, str(version), "full", int(time.time() * 1000),
                                   schema)
        self.last_error = None
        self.swaps += 1
        log.info("now serving %s v%s (%d rows; downloaded and applied in %.2f s)",
                 self.registry.name, version, len(export.ids), time.monotonic() - started)
        return True

    @property
    def model_name(self) -> str:
        return str(self.registry.name)

    def served(self) -> tuple[str, float | None] | None:
        """(version, staleness_s) of the model being served; None before the first."""
        model = self.current
        return None if model is None else (model.version, self.staleness_s(model))

    def _published_at_ms(self, version: int) -> int | None:
        """The version's registration time (ms), None when MLflow cannot say: serving goes on."""
        try:
            mv = self.registry.client.get_model_version(self.registry.name, str(version))
            value = dict(mv.tags or {}).get(T_PUBLISHED_MS)
            return int(value) if value is not None else None
        except Exception as exc:  # MLflow or the network; the staleness is then unknown
            log.warning("cannot read when v%s was registered: %s", version,
                        redact_text(f"{type(exc).__name__}: {exc}")[:300])
            return None

    def staleness_s(self, model: LoadedModel, now_ms: int | None = None) -> float | None:
        """Seconds since `model`'s version was registered; None when unknown."""
        version, published = self._published
        if published is None or version != model.version:
            return None
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return round(max(0, now - published) / 1000.0, 3)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # keep following whatever MLflow throws at us
                log.exception("unexpected error while following the alias")
            if self.wakeup is not None:
                self.wakeup.wait(self.poll_s, self._stop)
            else:
                self._stop.wait(self.poll_s)

    def start(self) -> None:
        """Follow the alias in a daemon thread (the first poll happens at once, the next after
        `poll_s` or a hint, whichever comes first)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="model-follower", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

