--[[
  CLEANUP's end: the migration is DONE (from RUNNING) or ROLLED_BACK (from ROLLING_BACK),
  its lock released if it still holds it, its record set to expire, and it moves from
  the running index to the finished one, trimmed by age and by count. Called again it
  changes no state and counts nothing twice.

  Input:
    KEYS[1] the migration record
    KEYS[2] the symbol's lock, migrating:{symbol}
    KEYS[3] the handed-over book, handoff:{id}
    KEYS[4] the running index
    KEYS[5] the finished index (id scored by its end ms)
    KEYS[6] the migration stats: a count per end state, the last pause

    ARGV[1] the migration id
    ARGV[2] seconds to keep a record that has no ttl_s of its own
    ARGV[3] finished migrations the index keeps, at most
    ARGV[4] seconds to keep the handed-over book, if it has no expiry yet

  Output:
    the migration's state now: DONE or ROLLED_BACK (or what it was, if neither RUNNING
    nor ROLLING_BACK)
]]
-- include: migration_lib
local now = now_ms()
local before = redis.call('HGET', KEYS[1], 'state')
local state = before
if state == 'RUNNING' then state = 'DONE' elseif state == 'ROLLING_BACK' then
  state = 'ROLLED_BACK' end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('HSET', KEYS[1], 'state', state, 'step', 'DONE', 'CLEANUP_end_ms', now,
           'finished_ms', now)
local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl_s') or ARGV[2])
redis.call('EXPIRE', KEYS[1], ttl)
-- the handoff never expires while the migration runs (workers/worker.py)
if redis.call('TTL', KEYS[3]) == -1 then redis.call('EXPIRE', KEYS[3], ARGV[4]) end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[5], 'NX', now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', string.format('(%d', now - ttl * 1000))
redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -tonumber(ARGV[3]) - 1)
if before ~= state then
  -- counted once, by whichever orchestrator ended it
  redis.call('HINCRBY', KEYS[6], state, 1)
  local t = redis.call('HMGET', KEYS[1], 'paused_ms', 'switched_ms')
  if t[1] and t[2] then
    redis.call('HSET', KEYS[6], 'last_paused_ms', tonumber(t[2]) - tonumber(t[1]),
               'last_id', ARGV[1])
  end
end
return state
