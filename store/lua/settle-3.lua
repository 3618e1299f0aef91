-- Settles one worker batch of one shard, atomically: checks the worker still holds the
-- shard's lease, skips a batch the watermark says was settled already (a redelivery after
-- a crash), else moves the balances, patches the order records, appends the batch's
-- entry to the events stream and advances the watermark. The caller decides every value
-- it writes (the order statuses too, from schema/orders.py): this only writes them.
--
-- KEYS[1] applied:{shard}  the watermark: the last orders-stream id settled
-- KEYS[2] owner:{shard}    the shard's lease, holding its owner's token
-- KEYS[3] events:{shard}   the stream the batch's EventsEntry goes to
--
-- ARGV[1]  the worker's lease token
-- ARGV[2]  the batch's last orders-stream id: the new watermark, the entry's `id`
-- ARGV[3]  the batch's events, msgpack (the entry's `events`); '' when it has none (a
--          batch of control entries only): no entry is written, the watermark moves
-- ARGV[4]  the balance changes for the database, holds included, msgpack (the entry's
--          `balances`)
-- ARGV[5]  the batch's first orders-stream id (the entry's `first`)
-- ARGV[6]  the changes to Redis, msgpack [balances, orders], numbers as decimal strings:
--          balances [[user, asset, available delta, locked delta], ...] ('0': no change);
--          orders [[order id, status, remaining, price, filled, notional, settled,
--          reason, finished, triggered], ...]: status, remaining, price and reason '' to
--          leave the field as it is; filled and notional are added; a fill with remaining
--          '' counts the record's remaining down; settled (boolean) clears `pending`;
--          finished (boolean) lets the record expire; triggered (boolean, may be absent)
--          marks a stop triggered
-- ARGV[7]  balance key prefix (balance:{user})
-- ARGV[8]  available field prefix (avail:{asset})
-- ARGV[9]  locked field prefix (locked:{asset})
-- ARGV[10] order key prefix (order:{id})
-- ARGV[11] seconds a finished order's record is kept
--
-- Returns: 1 settled; 0 already settled (the watermark is at or past ARGV[2]);
--          error LEASE_LOST if the lease is not ARGV[1]'s (nothing written)

local function parse(id)
  local ms, seq = string.match(id, '(%d+)-(%d+)')
  return tonumber(ms), tonumber(seq)
end

if redis.call('GET', KEYS[2]) ~= ARGV[1] then return redis.error_reply('LEASE_LOST') end
local applied = redis.call('GET', KEYS[1])
if applied then
  local am, as = parse(applied)
  local bm, bs = parse(ARGV[2])
  if am > bm or (am == bm and as >= bs) then return 0 end
end

local changes = cmsgpack.unpack(ARGV[6])
local balance, avail, locked, order = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
for _, b in ipairs(changes[1]) do
  local key = balance .. b[1]
  if b[3] ~= '0' then redis.call('HINCRBY', key, avail .. b[2], b[3]) end
  if b[4] ~= '0' then redis.call('HINCRBY', key, locked .. b[2], b[4]) end
end
for _, o in ipairs(changes[2]) do
  local key, remaining, filled = order .. o[1], o[3], o[5]
  if filled ~= '0' then
    redis.call('HINCRBY', key, 'filled', filled)
    redis.call('HINCRBY', key, 'notional', o[6])
    if remaining == '' then redis.call('HINCRBY', key, 'remaining', '-' .. filled) end
  end
  -- one HSET per record, whatever it changes
  local fields = {}
  if remaining ~= '' then fields[#fields + 1] = 'remaining'; fields[#fields + 1] = remaining end
  if o[4] ~= '' then fields[#fields + 1] = 'price'; fields[#fields + 1] = o[4] end
  if o[7] then fields[#fields + 1] = 'pending'; fields[#fields + 1] = '0' end
  if o[8] ~= '' then fields[#fields + 1] = 'reason'; fields[#fields + 1] = o[8] end
  if o[2] ~= '' then fields[#fields + 1] = 'status'; fields[#fields + 1] = o[2] end
  if o[10] then fields[#fields + 1] = 'triggered'; fields[#fields + 1] = '1' end
  if #fields > 0 then redis.call('HSET', key, unpack(fields)) end
  if o[9] then redis.call('EXPIRE', key, ARGV[11]) end
end

if ARGV[3] ~= '' then
  redis.call('XADD', KEYS[3], '*', 'id', ARGV[2], 'first', ARGV[5], 'events', ARGV[3],
             'balances', ARGV[4])
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
