"""Which feature schema a feature store holds: one per namespace, claimed by the first worker.

The key `samples:schema` (beside the sample stream, `schema_key`) holds the hash of the schema
the store's blocks were made with. A worker claims it at start-up (SET NX) and stops with
SchemaError when it names another schema, so blocks of two schemas never share a stream (every
block also carries its schema hash, which readers check: `samples.decode_block`). A store
without the key (a fresh one, or a Redis that came back empty) is claimed, unless its stream
still holds blocks of another schema or blocks made before schemas existed (version 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stages.common import keys
from stages.common.samples import block_schema
from stages.common.schema import FeatureSchema, SchemaError

if TYPE_CHECKING:
    from redis.asyncio import Redis


def schema_key(namespace: str) -> bytes:
    """The string holding the store's schema hash: `samples:schema`."""
    return keys.samples_stream(namespace) + b":schema"


async def claim_store_schema(client: Redis, namespace: str, schema: FeatureSchema) -> bool:
    """Make sure the store of `namespace` holds samples of `schema` only; True when this call
    claimed it (the key was absent). SchemaError when it holds another schema's samples."""
    what = f"the feature store of namespace {namespace!r}"
    key = schema_key(namespace)
    stored: Any = await client.get(key)
    claimed = False
    if stored is None:
        newest: Any = await client.xrevrange(keys.samples_stream(namespace), count=1)
        if newest:
            found = block_schema(newest[0][1])
            if found is None:
                raise SchemaError(
                    f"{what} holds sample blocks of version 1, made before feature schemas: "
                    "let the trainer read them and delete the stream, or give this pipeline a "
                    "new FRESHREC_REDIS_NAMESPACE"
                )
            schema.check_same(found, what)
        claimed = bool(await client.set(key, schema.schema_hash, nx=True))
        stored = await client.get(key)
    schema.check_same(stored.decode() if isinstance(stored, bytes) else str(stored), what)
    return claimed
