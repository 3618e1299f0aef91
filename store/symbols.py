"""Listing symbols: the spec every part reads and the route table entry the router needs."""

import msgspec
from redis.asyncio import Redis

from schema import keys
from schema.symbols import MAX_DECIMALS, SymbolSpec


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


async def list_asset(redis: Redis, asset: str, decimals: int) -> int:
    """Declare how many decimals `asset` has (USD 2: amounts are cents), before the first
    symbol trading it is listed. The first declaration stands: changing it would change
    what every stored amount of the asset means. Returns the decimals it has."""
    if not 0 <= decimals <= MAX_DECIMALS:
        raise ValueError(f"{asset}: decimals must be within 0..{MAX_DECIMALS}")
    await redis.hsetnx(keys.ASSETS, asset, decimals)
    return int(_text(await redis.hget(keys.ASSETS, asset) or b"0"))


async def load_decimals(redis: Redis) -> dict[str, int]:
    """Every declared asset's decimals; an asset never declared has 0 (its minor unit is
    the unit)."""
    raw = await redis.hgetall(keys.ASSETS)
    return {_text(k): int(v) for k, v in raw.items()}
