-- Stores the book a DRAIN marker handed over. While its migration runs (or rolls back)
-- the handoff is the book's only copy, so it never expires then; a marker re-applied by
-- recovery after the migration ended stores it for a while only.
--
-- KEYS[1] handoff:{migration}    the handed-over book
-- KEYS[2] migration:{migration}  the migration's record (field `state`)
--
-- ARGV[1] the book's snapshot bytes (workers/book.py)
-- ARGV[2] seconds to keep the handoff once its migration is no longer RUNNING or
--         ROLLING_BACK
--
-- Returns: 1

redis.call('SET', KEYS[1], ARGV[1])
local state = redis.call('HGET', KEYS[2], 'state')
if state ~= 'RUNNING' and state ~= 'ROLLING_BACK' then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
