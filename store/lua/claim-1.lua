-- Claims a DRAIN marker, atomically against the orchestrator's rollback: once claimed
-- the orchestrator must give the book back; once rolled back the marker is ignored. A
-- claimed marker stays claimed, so re-applying it (recovery, a worker that took the shard
-- over) decides the same.
--
-- KEYS[1] migration:{migration}  the migration's record (fields `state`, `drained`)
--
-- Returns: 1 the source hands the book over (claimed now or before); 0 it keeps the book
--          (the migration is not RUNNING and the marker was never claimed)

if redis.call('HGET', KEYS[1], 'drained') == '1' then return 1 end
if redis.call('HGET', KEYS[1], 'state') ~= 'RUNNING' then return 0 end
redis.call('HSET', KEYS[1], 'drained', '1')
return 1
