--[[
  How far a shard's worker is behind, for the operator console (api/console.py): the
  commands queued on the shard that the worker has not settled yet, counted up to a cap,
  and the oldest one's entry id (its milliseconds are when it was queued). Only the count
  and one id leave Redis, not the entries.

  Input:
    KEYS[1] the shard's commands stream, orders:{shard}
    KEYS[2] the worker's watermark, applied:{shard} (the last entry id settled)

    ARGV[1] the most entries counted

  Output:
    {count, the oldest unsettled entry's id}, or {0, ''} when the worker is caught up;
    a count equal to ARGV[1] means at least that many
]]
local applied = redis.call('GET', KEYS[2]) or '0-0'
local waiting = redis.call('XRANGE', KEYS[1], '(' .. applied, '+', 'COUNT', tonumber(ARGV[1]))
if #waiting == 0 then return {0, ''} end
return {#waiting, waiting[1][1]}
