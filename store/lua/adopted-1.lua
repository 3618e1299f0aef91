-- Tells a migration's orchestrator which shard holds the book now: it switches routing
-- only to a shard that says so. An ended migration is left as it is when recovery
-- re-applies the ADOPT marker.
--
-- KEYS[1] migration:{migration}  the migration's record (fields `state`, `adopted`)
--
-- ARGV[1] the adopting shard's number
--
-- Returns: 1 (whether or not the record was written)

local state = redis.call('HGET', KEYS[1], 'state')
if state == 'RUNNING' or state == 'ROLLING_BACK' then
  redis.call('HSET', KEYS[1], 'adopted', ARGV[1])
end
return 1
