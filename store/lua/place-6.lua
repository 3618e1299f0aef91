--[[
  Place an order: the duplicate client order id check, the balance hold, the route
  lookup and the enqueue, in one step nothing can interleave with.

  The order record is built here from the command itself: fewer arguments to pack and
  send per order was worth ~20 µs of the API's CPU per order. The command is the msgpack
  of schema.messages.Place, read by field name (a map, not array_like): the fields read
  are the `c.NAME` below, and the contract test checks each is a field of Place.

  Input:
    KEYS[1] route:{symbol}
    KEYS[2] balance:{user}
    KEYS[3] order:{order id}
    KEYS[4] cid:{user}:{client order id}, or '' for an order without one
    KEYS[5] rate:{unix second}, orders per symbol that second (the rebalancer reads it)
    KEYS[6] user_orders:{user}, the user's newest order ids

    ARGV[1] orders stream prefix
    ARGV[2] pending stream prefix
    ARGV[3] the command: msgpack of Place
    ARGV[4] hold: how much to lock, in the asset the order pays with
    ARGV[5] that asset's available field of the balance hash
    ARGV[6] that asset's locked field
    ARGV[7] that asset
    ARGV[8] created, ms since the epoch
    ARGV[9] the balance hash's count of the user's open orders on the symbol (open:{symbol})
    ARGV[10] its count of the user's open orders in all (open)
    ARGV[11] the most open orders a user may have on one symbol
    ARGV[12] the most open orders a user may have in all
    ARGV[13] seconds the client order id stays taken

  Returns:
    {'OK', shard}
    {'NO_ROUTE'}                          the symbol has no route
    {'DUPLICATE', order id}               the client order id is the earlier order's
    {'INSUFFICIENT_BALANCE', available}   nothing held
    {'TOO_MANY_OPEN', 'SYMBOL' or 'ALL'}  the user has ARGV[11] open orders on the
                                          symbol, or ARGV[12] in all
]]
-- include: enqueue

local route = route_of(KEYS[1])
if not route[1] then return {'NO_ROUTE'} end
local c = cmsgpack.unpack(ARGV[3])
local order_id = string.format('%d', c.order_id)
if KEYS[4] ~= '' then
  local existing = redis.call('GET', KEYS[4])
  if existing then return {'DUPLICATE', existing} end
end
-- Open orders, counted up here and down by the SETTLE script as each one ends: exact, and
-- in the balance hash the script touches anyway. Every order counts until it has ended.
local open = redis.call('HMGET', KEYS[2], ARGV[9], ARGV[10])
if tonumber(open[1] or '0') >= tonumber(ARGV[11]) then return {'TOO_MANY_OPEN', 'SYMBOL'} end
if tonumber(open[2] or '0') >= tonumber(ARGV[12]) then return {'TOO_MANY_OPEN', 'ALL'} end
local hold = tonumber(ARGV[4])
if hold > 0 then
  local available = redis.call('HGET', KEYS[2], ARGV[5]) or '0'
  if tonumber(available) < hold then return {'INSUFFICIENT_BALANCE', available} end
  redis.call('HINCRBY', KEYS[2], ARGV[5], '-' .. ARGV[4])
  redis.call('HINCRBY', KEYS[2], ARGV[6], ARGV[4])
end
enqueue(route, ARGV[2], c.symbol, ARGV[1], 'c', ARGV[3], 'h', ARGV[4], 's', c.side)
-- Both counts in one write: read above in this same step, so nothing moved them since
-- (each command a script writes is one more the AOF records).
redis.call('HSET', KEYS[2], ARGV[9], (tonumber(open[1]) or 0) + 1,
  ARGV[10], (tonumber(open[2]) or 0) + 1)
if KEYS[4] ~= '' then redis.call('SET', KEYS[4], order_id, 'EX', ARGV[13]) end
local quantity = string.format('%d', c.quantity)
-- schema.orders.OrderRecord's fields, as strings (its from_hash reads them back), in one
-- HSET. A field at its default is left out (ORDER_RECORD_DEFAULTED: no fill yet, not
-- post-only, no client order id), and so is what only some orders carry
-- (ORDER_RECORD_OPTIONAL): a stop's trigger, a GTD order's expiry, the price a MARKET or
-- STOP_MARKET buy's funds were held at. Each field a new hash gets is looked for among
-- those before it: 11 fields instead of 15 were a tenth of Redis's CPU per PLACE.
local record = {'user_id', c.user_id, 'symbol', c.symbol, 'side', c.side, 'type', c.type,
  'price', c.price and string.format('%d', c.price) or '', 'quantity', quantity,
  'remaining', quantity, 'time_in_force', c.time_in_force, 'status', 'NEW',
  'pays_with', ARGV[7], 'created_ms', ARGV[8]}
if c.post_only then record[#record + 1] = 'post_only'; record[#record + 1] = '1' end
if c.client_order_id then
  record[#record + 1] = 'client_order_id'; record[#record + 1] = c.client_order_id
end
for _, name in ipairs({'stop_price', 'expire_at_ms', 'protection_price'}) do
  local value = c[name]
  if value then record[#record + 1] = name; record[#record + 1] = string.format('%d', value) end
end
redis.call('HSET', KEYS[3], unpack(record))
if redis.call('HINCRBY', KEYS[5], c.symbol, 1) == 1 then redis.call('EXPIRE', KEYS[5], 120) end
-- The user's newest orders, for reads that must see an order before the batcher has
-- written it (read-your-writes). Trimmed back to RECENT_ORDERS (200) once it holds twice
-- that: one LTRIM per 200 orders, not one per order; readers take the first RECENT_ORDERS.
if redis.call('LPUSH', KEYS[6], order_id) > 400 then redis.call('LTRIM', KEYS[6], 0, 199) end
return {'OK', route[1]}
