-- Gives the records of orders whose end the batcher has committed a time to live (reads
-- fall back to the database once a record is gone), in one call for a whole flush: an
-- EXPIRE a record on a pipeline cost the batcher ~10 µs of Python an order (the command
-- queued, packed and its reply parsed), this ~0.1 µs an id on the client.
--
-- KEYS: none. The records' names are made here from ARGV[1] as settle-3.lua makes them:
-- on the one Redis primary of the order path (DESIGN.md §7) every key is local.
--
-- ARGV[1] order key prefix (order:{id})
-- ARGV[2] seconds each record is kept
-- ARGV[3] the order ids, decimal, separated by single spaces
--
-- Returns: how many of the records existed (and were given ARGV[2] seconds)

local prefix, seconds, found = ARGV[1], ARGV[2], 0
for id in string.gmatch(ARGV[3], '%d+') do
  found = found + redis.call('EXPIRE', prefix .. id, seconds)
end
return found
