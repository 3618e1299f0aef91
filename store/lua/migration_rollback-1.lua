--[[
  Begin a rollback: state ROLLING_BACK, step ROLLBACK, the step it left and why.
  Atomic against the source worker's claim of the DRAIN marker (workers/worker.py),
  which sets `drained` only while the migration is RUNNING.

  Input:
    KEYS[1] the migration record

    ARGV[1] why (kept as `reason`)

  Output:
    '1' the source drained already: it must get its book back
    '0' it did not, and now never will (it ignores the marker)
    nil the route was switched already (step CLEANUP) or the migration ended: too late
  A rollback begun already answers as it did, writing nothing.
]]
-- include: migration_lib
local m = redis.call('HMGET', KEYS[1], 'state', 'step', 'drained')
if m[1] == 'ROLLING_BACK' then return m[3] or '0' end
if m[1] ~= 'RUNNING' or m[2] == 'CLEANUP' then return false end
redis.call('HSET', KEYS[1], 'state', 'ROLLING_BACK', 'step', 'ROLLBACK', 'rolled_back_at', m[2],
           'reason', ARGV[1], 'ROLLBACK_start_ms', now_ms())
return m[3] or '0'
