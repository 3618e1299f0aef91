-- Gives up a shard's lease, for its owner only, so that a clean stop hands the shard over
-- at once instead of after the lease's expiry; another worker's lease is left alone.
--
-- KEYS[1] owner:{shard}  the lease, holding its owner's token
--
-- ARGV[1] the worker's lease token
--
-- Returns: 1 released; 0 the lease is not ARGV[1]'s (or is gone): nothing changed

if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
