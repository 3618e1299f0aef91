--[[
  End a step: the record moves on to the next step, only from the step that ended and
  only while RUNNING. Two orchestrators may work on one migration (an operator's
  `spot migrate` beside the API's): one's rollback must not be overwritten by the
  other's step end, nor a step ended twice.

  Input:
    KEYS[1] the migration record

    ARGV[1] the step that ended
    ARGV[2] the next step

  Output:
    1 if moved on ({step}_end_ms stamped), 0 if not (nothing written)
]]
-- include: migration_lib
local m = redis.call('HMGET', KEYS[1], 'state', 'step')
if m[1] ~= 'RUNNING' or m[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1] .. '_end_ms', now_ms(), 'step', ARGV[2])
return 1
