"""The Redis key layout of the feature store, version 1. A pure function of its inputs.

Every key is `freshrec:v1:{<namespace>}:<name>`. The braces make the namespace a Redis Cluster
hash tag, so all keys of one pipeline live in one slot and one Lua script may touch them all.
Changing a key here is a layout change: bump KEY_LAYOUT_VERSION (old data stays readable under
the old prefix).

    samples               stream   sample blocks (see samples.py), trimmed to the retention bound
    samples:seq           string   the last block sequence number handed out
    offsets:<topic>       hash     partition -> next Kafka offset to store (the watermark);
                                   `topic_id`: the topic incarnation the watermarks belong to,
                                   `retired:<id>`: incarnations replaced since (a recreated
                                   topic resets the watermarks, see stages/features/store.py)
    gaps                  list     JSON lines: offset gaps and trimmed data that was noticed
    counters              hash     events_in, samples_out, dead_letters, duplicates_skipped, ...
    stats                 hash     field -> JSON running statistics (dense min/max/mean, counts)
    stats:version         string   incremented with each statistics snapshot
    epoch                 string   the store's incarnation: a random id set once (SET NX) by the
                                   first writer or reader; a Redis that lost its data (restarted
                                   empty) gets a new one, which is how readers notice the reset
"""

from __future__ import annotations

import re

KEY_LAYOUT_VERSION = 1
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _key(namespace: str, name: str) -> bytes:
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"bad Redis namespace {namespace!r}: use 1-64 of [A-Za-z0-9_.-]")
    return f"freshrec:v{KEY_LAYOUT_VERSION}:{{{namespace}}}:{name}".encode()


def samples_stream(namespace: str) -> bytes:
    return _key(namespace, "samples")


def samples_seq(namespace: str) -> bytes:
    return _key(namespace, "samples:seq")


def offsets(namespace: str, topic: str) -> bytes:
    return _key(namespace, f"offsets:{topic}")


def gaps(namespace: str) -> bytes:
    return _key(namespace, "gaps")


def counters(namespace: str) -> bytes:
    return _key(namespace, "counters")


def stats(namespace: str) -> bytes:
    return _key(namespace, "stats")


def stats_version(namespace: str) -> bytes:
    return _key(namespace, "stats:version")


def store_epoch(namespace: str) -> bytes:
    return _key(namespace, "epoch")
