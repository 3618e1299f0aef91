--[[
  XADD a marker (a DRAIN or ADOPT ControlEntry, schema/streams.py) to a shard's stream,
  at most once per record field: a second DRAIN after a rollback gave the book back
  would drop it again.

  Input:
    KEYS[1] the migration record
    KEYS[2] the shard's stream, orders:{shard}

    ARGV[1] the record's field that keeps the entry's id
    ARGV[2..] the entry: field, value, field, value...

  Output:
    the entry's id: the one added now, or the one added by an earlier call
]]
local id = redis.call('HGET', KEYS[1], ARGV[1])
if id then return id end
id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('HSET', KEYS[1], ARGV[1], id)
return id
