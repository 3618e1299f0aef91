--[[
  Create a migration of a symbol to a shard, unless one is moving the symbol already.

  Input:
    KEYS[1] the symbol's lock, migrating:{symbol} (holds the running migration's id)
    KEYS[2] the symbol's route, route:{symbol}
    KEYS[3] the migration id counter
    KEYS[4] the running index, migrations:running (id scored by its creation ms)

    ARGV[1] symbol
    ARGV[2] target shard
    ARGV[3] each step's timeout, ms
    ARGV[4] the migration records' key prefix (the record is ARGV[4] .. id)
    ARGV[5] seconds the record is kept once finished

  Output:
    {'OK', id}        created: state RUNNING, step PAUSE
    {'EXISTS', id}    the symbol's running migration (nothing written)
    {'NO_ROUTE'}      no such symbol
    {'NOT_ACTIVE'}    the route is not ACTIVE
    {'SAME_SHARD'}    the symbol is on the target already
]]
-- include: migration_lib
local existing = redis.call('GET', KEYS[1])
if existing then return {'EXISTS', existing} end
local route = redis.call('HMGET', KEYS[2], 'shard', 'status')
if not route[1] then return {'NO_ROUTE'} end
if route[2] ~= 'ACTIVE' then return {'NOT_ACTIVE'} end
if route[1] == ARGV[2] then return {'SAME_SHARD'} end
local now = now_ms()
local id = ARGV[1] .. '-' .. redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], id)
redis.call('HSET', ARGV[4] .. id, 'symbol', ARGV[1], 'from', route[1], 'to', ARGV[2],
           'state', 'RUNNING', 'step', 'PAUSE', 'timeout_ms', ARGV[3], 'created_ms', now,
           'ttl_s', ARGV[5])
redis.call('ZADD', KEYS[4], now, id)
return {'OK', id}
