--[[
  SWITCH (or, from a rollback, switch back): every pending entry moves, in order and
  unchanged, to the end of the destination's stream, pending:{symbol} is deleted and the
  route points at the destination, ACTIVE. One step: nothing newer can overtake what was
  buffered. The record moves on to CLEANUP.

  Input:
    KEYS[1] the migration record
    KEYS[2] the symbol's route
    KEYS[3] the symbol's pending buffer, pending:{symbol}
    KEYS[4] the destination's stream, orders:{shard}

    ARGV[1] the destination shard
    ARGV[2] the state the migration must be in: RUNNING to switch, ROLLING_BACK to
            switch back (and its step SWITCH or ROLLBACK)

  Output:
    the number of entries moved, or nil if the migration is not in that state (nothing
    written). The record gets `pending` (that number), `replayed_to` (the last moved
    entry's id in the destination's stream, '' for none), `switched_ms` and
    `pending_oldest_ms` (the oldest entry's ms, or the switch's when none).
]]
-- include: migration_lib
local m = redis.call('HMGET', KEYS[1], 'state', 'step')
if m[1] ~= ARGV[2] or (m[2] ~= 'SWITCH' and m[2] ~= 'ROLLBACK') then return false end
local now = now_ms()
local entries = redis.call('XRANGE', KEYS[3], '-', '+')
local last = ''
for _, entry in ipairs(entries) do last = redis.call('XADD', KEYS[4], '*', unpack(entry[2])) end
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[2], 'shard', ARGV[1], 'status', 'ACTIVE')
local oldest = now
if entries[1] then oldest = string.match(entries[1][1], '(%d+)-') end
redis.call('HSET', KEYS[1], 'step', 'CLEANUP', 'switched_ms', now, 'pending', #entries,
           'pending_oldest_ms', oldest, 'replayed_to', last, m[2] .. '_end_ms', now)
return #entries
