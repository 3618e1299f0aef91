--[[
  PAUSE: the route goes MIGRATING with its epoch + 1, so the router queues the symbol's
  new commands in pending:{symbol}. The epoch is bumped once: a resumed PAUSE finds the
  step moved on.

  Input:
    KEYS[1] the migration record
    KEYS[2] the symbol's route

  Output:
    the route's new epoch, or 0 if the migration is not RUNNING in step PAUSE (nothing
    written)
]]
-- include: migration_lib
local m = redis.call('HMGET', KEYS[1], 'state', 'step')
if m[1] ~= 'RUNNING' or m[2] ~= 'PAUSE' then return 0 end
local now = now_ms()
local epoch = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
redis.call('HSET', KEYS[2], 'status', 'MIGRATING')
redis.call('HSETNX', KEYS[1], 'PAUSE_start_ms', now)
redis.call('HSET', KEYS[1], 'epoch', epoch, 'step', 'DRAIN', 'paused_ms', now, 'PAUSE_end_ms', now)
return epoch
