"""Listing symbols: the spec every part reads and the route table entry the router needs."""

import msgspec
from redis.asyncio import Redis

from schema import keys
from schema.symbols import SymbolSpec


async def list_symbol(redis: Redis, spec: SymbolSpec, shards: int) -> int:
    """Store the spec and seed the route at the symbol's home shard, unless it has one
    already (a migration may have moved it). Returns the shard it lives on."""
    pipe = redis.pipeline(transaction=True)
    pipe.hset(keys.SYMBOLS, spec.symbol, msgspec.json.encode(spec))
    pipe.hsetnx(keys.route(spec.symbol), "shard", keys.home_shard(spec.symbol, shards))
    pipe.hsetnx(keys.route(spec.symbol), "status", "ACTIVE")
    pipe.hsetnx(keys.route(spec.symbol), "epoch", 0)
    pipe.hget(keys.route(spec.symbol), "shard")
    *_, shard = await pipe.execute()
    return int(shard)


async def load_specs(redis: Redis) -> dict[str, SymbolSpec]:
    raw = await redis.hgetall(keys.SYMBOLS)
    # str keys only from a client made with decode_responses=True, which Spot never makes
    return {_text(k): msgspec.json.decode(v, type=SymbolSpec) for k, v in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
