"""Run the embedded broker (Tansu) as a child and keep its memory bounded by rolling it.

    python -m infra.services.broker_keeper --bootstrap 127.0.0.1:PORT [--memory-mb 512]
        [--memory-limit-mb 2048] [--check-interval-s 1] -- TANSU ARGS...

`KafkaBroker.launch` starts Tansu through this process (itself under the log wrapper), so
`freshrec infra up`, the test fixtures and the benches all get the same retention. The policy
is `broker_retention.py`; this module measures the broker's RSS (psutil, Tansu's process only),
asks the broker what it holds, and rolls it when the policy says so:

1. committed offsets of every consumer group (ListGroups, OffsetFetch), then the end of every
   partition from a Fetch at an offset past any end (answers the high watermark, no records;
   Tansu's ListOffsets answers the last batch's first offset + 1, not the end);
2. right after that Fetch: SIGKILL to Tansu, a new Tansu on the same port, and CreateTopics of
   every topic with its partitions and configs (read before step 1).

Producers see the port closed for tens of milliseconds and retry (a topic not created yet is
retried too: Tansu does not create topics on its own); consumers rejoin their group, find no
committed offset and start at the beginning of the new topics (auto_offset_reset=earliest); the
features worker sees the new topic id and resets its watermarks (stages/features/store.py).

What this cannot do: make step 2 atomic with step 1. Records acknowledged to a producer between
the Fetch and the SIGKILL (about a millisecond) are gone unread.
bench/RESULTS-soak.md has the measured count.

psutil and aiokafka (raw protocol requests: confluent-kafka has no Fetch without a consumer).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from infra.services.broker_retention import MB, EmbeddedKafkaSettings, RollPolicy, TopicState
from infra.services.logpipe import _die_with_parent

log = logging.getLogger("freshrec.broker_keeper")

_PAST_ANY_END = 1 << 62  # a fetch offset no partition reaches: the answer holds no records
_RETRY_S = 0.1  # over budget with nothing to roll: look again soon (a group may catch up)
_TIMEOUT_MS = 10_000
_TOPIC_RESOURCE = 2  # DescribeConfigs resource type of a topic


class BrokerView:
    """The few requests the keeper sends, all to the one embedded broker (which is also the
    group coordinator), on one connection."""

    def __init__(self, bootstrap: str) -> None:
        from aiokafka.client import AIOKafkaClient

        self._client = AIOKafkaClient(
            bootstrap_servers=bootstrap, client_id="freshrec-broker-keeper"
        )
        self._node: int | None = None

    async def _send_ready(self) -> int:
        if self._node is None:
            await self._client.bootstrap()
            self._node = next(iter(self._client.cluster.brokers())).nodeId
        return self._node

    async def _send(self, request: Any) -> Any:
        # The highest version both sides speak; the fields read below are in all of them.
        return await self._client.send(await self._send_ready(), request)

    async def close(self) -> None:
        await self._client.close()

    async def partitions(self) -> dict[str, int]:
        """Partition count of every topic (internal `__` topics left out)."""
        if self._node is None:
            await self._send_ready()
        cluster = await self._client.fetch_all_metadata()
        return {
            name: len(cluster.partitions_for_topic(name) or ())
            for name in sorted(cluster.topics())
            if not name.startswith("__")
        }

    async def committed(self, partitions: dict[str, int]) -> dict[str, dict[str, tuple[int, ...]]]:
        """topic -> group -> committed offset per partition (-1: none), for every group with
        a committed offset on the topic."""
        from aiokafka.protocol.admin import ListGroupsRequest_v1
        from aiokafka.protocol.commit import OffsetFetchRequest_v1

        listed = await self._send(_Pinned(ListGroupsRequest_v1()))
        found: dict[str, dict[str, list[int]]] = {}
        wanted = [(t, list(range(n))) for t, n in partitions.items()]
        for group, _protocol in listed.groups:
            # v1 names the partitions; Tansu's answer to v2's "all" does not decode.
            answer = await self._send(_Pinned(OffsetFetchRequest_v1(group, wanted)))
            for topic, parts in answer.topics:
                count = partitions.get(topic)
                offsets = [(p, offset) for p, offset, _meta, error in parts
                           if not error and offset >= 0]
                if count is None or not offsets:
                    continue
                per = found.setdefault(topic, {}).setdefault(group, [-1] * count)
                for p, offset in offsets:
                    if p < count:
                        per[p] = offset
        return {t: {g: tuple(o) for g, o in groups.items()} for t, groups in found.items()}

    async def ends(self, partitions: dict[str, int]) -> dict[str, tuple[int, ...]]:
        """End offset of every partition: the high watermark of a Fetch past any end."""
        from aiokafka.protocol.fetch import FetchRequest

        # max_wait 1 ms, min_bytes 1: Tansu answers max_wait 0 with no topics at all.
        request = FetchRequest(
            1, 1, 1, 0,
            [(t, [(p, _PAST_ANY_END, 1) for p in range(n)]) for t, n in partitions.items()],
        )
        response = await self._send(request)
        ends = {t: [0] * n for t, n in partitions.items()}
        for topic, parts in response.topics:
            for p, error, high, *_rest in parts:
                if topic in ends and not error and 0 <= p < len(ends[topic]):
                    ends[topic][p] = high
        return {t: tuple(e) for t, e in ends.items()}

    async def configs(self, topics: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
        """Each topic's configs as the broker reports them (Tansu: those it was made with)."""
        from aiokafka.protocol.admin import DescribeConfigsRequest

        if not topics:
            return {}
        response = await self._send(
            DescribeConfigsRequest([(_TOPIC_RESOURCE, t, None) for t in topics])
        )
        return {
            name: [(entry[0], entry[1]) for entry in entries if entry[1] is not None]
            for _err, _msg, _type, name, entries in response.resources
        }

    async def create(self, topics: dict[str, tuple[int, list[tuple[str, str]]]]) -> None:
        """Create `topics` (name -> partitions, configs; replication 1). RuntimeError naming
        the topics the broker refused."""
        from aiokafka.protocol.admin import CreateTopicsRequest

        created = await self._send(CreateTopicsRequest(
            [(t, n, 1, [], configs) for t, (n, configs) in topics.items()], _TIMEOUT_MS, False
        ))
        _check("CreateTopics", created.topic_errors)


class _Pinned:
    """A request struct of one version, sent as is (aiokafka's `Request` would negotiate the
    highest version, and for some of them Tansu's answer does not decode)."""

    def __init__(self, struct: Any) -> None:
        self._struct = struct

    def prepare(self, versions: dict[int, tuple[int, int]]) -> Any:
        return self._struct


def _check(step: str, results: Sequence[Sequence[Any]]) -> None:
    """Each result is (name, error code, ...)."""
    failed = [f"{r[0]}: error {r[1]}" for r in results if r[1]]
    if failed:
        raise RuntimeError(f"{step} refused ({', '.join(failed)})")


class Broker:
    """The Tansu child process, restartable on the same command line (and so the same port).

    `wait` returns only when the child exits without being restarted by `restart`."""

    def __init__(self, command: Sequence[str]) -> None:
        self._command = list(command)
        self._lock = threading.Lock()
        self.stopping = False  # a signal came: no more restarts
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self._command, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)  # noqa: PLW1509

    def rss(self) -> int:
        import psutil

        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def signal(self, signum: int) -> None:
        self.stopping = True
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def restart(self) -> bool:
        """Kill the child and start it again; False (nothing done) once stopping.

        SIGKILL, not SIGTERM: Tansu goes on acknowledging produce requests for a while after
        SIGTERM (measured: ~350 records at 2,000/s per roll lost that way), and it has nothing
        to save."""
        with self._lock:
            if self.stopping:
                return False
            self.proc.kill()
            self.proc.wait()
            self.proc = self._start()
            return True

    def wait(self) -> int:
        while True:
            proc = self.proc
            status = proc.wait()
            with self._lock:  # a restart in progress finishes first
                if self.proc is proc:
                    return status


async def _ready(bootstrap: str, timeout_s: float = 30.0) -> None:
    from infra.services.ports import accepts_connections, bootstrap_endpoint

    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(accepts_connections, bootstrap_endpoint(bootstrap), 0.5):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the restarted broker does not listen on {bootstrap}")
        await asyncio.sleep(0.02)


async def check_once(view: BrokerView, policy: RollPolicy, broker: Broker, bootstrap: str,
                     now: float) -> bool:
    """One look at the broker; True when it was rolled (`view` is then closed)."""
    rss = broker.rss()
    if not policy.wants_check(rss):
        policy.choose(rss, (), now)  # resets the hard limit's grace
        return False
    partitions = await view.partitions()
    configs = await view.configs(sorted(partitions))
    committed = await view.committed(partitions)
    ends = await view.ends(partitions)  # last: the restart below follows it at once
    roll = policy.choose(
        rss, [TopicState(t, ends[t], committed.get(t, {})) for t in partitions], now
    )
    if roll is None or not broker.restart():
        return False
    await view.close()
    await _ready(bootstrap)
    fresh = BrokerView(bootstrap)
    try:
        await fresh.create({t: (n, configs.get(t, [])) for t, n in partitions.items()})
    finally:
        await fresh.close()
    after = broker.rss()
    policy.rolled(after)
    if roll.forced:
        log.error(
            "broker RSS %d MB over FRESHREC_KAFKA_MEMORY_LIMIT_MB=%d without every topic read "
            "to its end: restarted it empty anyway, dropping %d records, unread: %s; RSS now "
            "%d MB", rss // MB, policy.settings.memory_limit_mb, roll.records,
            dict(roll.unread), after // MB,
        )
    else:
        log.info(
            "broker RSS %d MB over FRESHREC_KAFKA_MEMORY_MB=%d: restarted it empty (%d records, "
            "all read by their groups %s), topics %s created again (new topic ids, offsets "
            "from 0); RSS now %d MB", rss // MB, policy.settings.memory_mb, roll.records,
            sorted({g for c in committed.values() for g in c}), sorted(partitions),
            after // MB,
        )
    return True


async def keep(bootstrap: str, settings: EmbeddedKafkaSettings, broker: Broker,
               stop: threading.Event) -> None:
    """Check every `check_interval_s` (every 0.1 s while over budget) until `stop`."""
    policy = RollPolicy(settings)
    view: BrokerView | None = None
    while not stop.is_set():
        delay = settings.check_interval_s
        try:
            if view is None:
                view = BrokerView(bootstrap)
            if policy.wants_check(broker.rss()):
                delay = min(delay, _RETRY_S)
            if await check_once(view, policy, broker, bootstrap, time.monotonic()):
                view = None
        except Exception as exc:  # noqa: BLE001 - the broker is busy or away: log, next round
            if stop.is_set():
                break
            log.warning("retention check failed (%s: %s); next try in %.0f s",
                        type(exc).__name__, exc, settings.check_interval_s)
            delay = settings.check_interval_s
            if view is not None:
                await view.close()
                view = None
        await asyncio.sleep(delay)
    if view is not None:
        await view.close()


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    args = list(argv)
    if "--" not in args:
        raise SystemExit("usage: broker_keeper --bootstrap HOST:PORT [...] -- COMMAND [ARG ...]")
    cut = args.index("--")
    parser = argparse.ArgumentParser(prog="broker_keeper")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--memory-mb", type=int)
    parser.add_argument("--memory-limit-mb", type=int)
    parser.add_argument("--check-interval-s", type=float)
    options = parser.parse_args(args[:cut])
    if not args[cut + 1:]:
        raise SystemExit("broker_keeper: no command after --")
    return options, args[cut + 1:]


def main(argv: Sequence[str] | None = None) -> int:
    options, command = _parse(sys.argv[1:] if argv is None else argv)
    overrides = {
        key: value
        for key, value in (
            ("memory_mb", options.memory_mb),
            ("memory_limit_mb", options.memory_limit_mb),
            ("check_interval_s", options.check_interval_s),
        )
        if value is not None
    }
    settings = EmbeddedKafkaSettings(**overrides)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Its connection errors (the broker busy, or stopping) come back as exceptions, which
    # `keep` logs in one line each: no tracebacks from its own logger.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    broker = Broker(command)

    def forward(signum: int, frame: object) -> None:
        broker.signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    stop = threading.Event()
    keeper = threading.Thread(
        target=lambda: asyncio.run(keep(options.bootstrap, settings, broker, stop)),
        name="retention", daemon=True,
    )
    keeper.start()
    log.info(
        "retention on: memory_mb=%d memory_limit_mb=%d (FRESHREC_KAFKA_MEMORY_MB, "
        "FRESHREC_KAFKA_MEMORY_LIMIT_MB)", settings.memory_mb, settings.memory_limit_mb,
    )
    status = broker.wait()
    stop.set()
    keeper.join(timeout=2.0)
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    sys.exit(main())
