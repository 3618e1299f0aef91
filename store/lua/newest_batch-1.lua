--[[
  The newest settled batch of a shard (an EventsEntry, schema/streams.py): its entry id
  (when the worker settled it) and one of its fields, the id of the batch's oldest order
  in the orders stream (when that order was accepted). Only the two ids leave Redis, not
  the batch's events. The load test samples every shard with it (loadtest/run.py).

  Input:
    KEYS[1] the shard's events stream, events:{shard}

    ARGV[1] the field to return (EventsEntry.FIRST)

  Output:
    {entry id, the field's value}, or {} for an empty stream or an entry without it
]]
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if not newest then return {} end
local fields = newest[2]
for j = 1, #fields, 2 do
  if fields[j] == ARGV[1] then return {newest[1], fields[j + 1]} end
end
return {}
