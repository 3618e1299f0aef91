-- Extends a shard's lease, for its owner only: a worker that lost the lease (it stalled
-- past the expiry and another took the shard) must learn it, not take the lease back.
--
-- KEYS[1] owner:{shard}  the lease, holding its owner's token
--
-- ARGV[1] the worker's lease token
-- ARGV[2] the lease's new time to live, ms
--
-- Returns: 1 renewed; 0 the lease is not ARGV[1]'s (or is gone): the worker must stop

if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
