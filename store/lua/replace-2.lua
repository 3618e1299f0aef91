--[[
  Replace an order's price and/or remaining quantity: the owner and status checks, the
  hold for the order as it will be, and the enqueue of a Replace, in one step.

  One replace at a time per order: the hold of a second one could not be sized right
  while the first may still change the order's price (FIX's PendingReplace).

  Input:
    KEYS[1] order:{order id}
    KEYS[2] balance:{user}

    ARGV[1] orders stream prefix
    ARGV[2] pending stream prefix
    ARGV[3] route key prefix
    ARGV[4] the user asking
    ARGV[5] the order id
    ARGV[6] the new price, or '' to keep it
    ARGV[7] the new remaining quantity, or '' to keep it
    ARGV[8] the available field prefix of the balance hash (the asset is the record's)
    ARGV[9] the locked field prefix

  Returns:
    {'OK'}
    {'NOT_FOUND'}                         no such order, or another user's
    {'NOT_OPEN', status}                  ended (TERMINAL), or a MARKET or STOP_MARKET
                                          order (it never rests)
    {'PENDING'}                           an earlier replace is still queued
    {'TOO_LARGE'}                         the hold reaches 2^53 (api MAX_AMOUNT)
    {'INSUFFICIENT_BALANCE', available}   nothing held
]]
-- include: enqueue

local o = redis.call('HMGET', KEYS[1], 'user_id', 'symbol', 'status', 'side', 'price',
                     'remaining', 'pending', 'pays_with', 'type')
if o[1] ~= ARGV[4] then return {'NOT_FOUND'} end
if TERMINAL[o[3]] or o[9] == 'MARKET' or o[9] == 'STOP_MARKET' then return {'NOT_OPEN', o[3]} end
if o[7] == '1' then return {'PENDING'} end
local price = tonumber(ARGV[6] ~= '' and ARGV[6] or o[5])
local quantity = tonumber(ARGV[7] ~= '' and ARGV[7] or o[6])
local hold = quantity
if o[4] == 'BUY' then hold = price * quantity end
-- Amounts are doubles in Lua: exact below 2^53 only.
if hold >= 9007199254740992 then return {'TOO_LARGE'} end
local held = string.format('%d', hold)
local available = redis.call('HGET', KEYS[2], ARGV[8] .. o[8]) or '0'
if tonumber(available) < hold then return {'INSUFFICIENT_BALANCE', available} end
redis.call('HINCRBY', KEYS[2], ARGV[8] .. o[8], '-' .. held)
redis.call('HINCRBY', KEYS[2], ARGV[9] .. o[8], held)
redis.call('HSET', KEYS[1], 'pending', '1')
-- schema.messages.Replace, by field name as the worker decodes it.
local command = cmsgpack.pack({
  action = 'REPLACE', order_id = tonumber(ARGV[5]), user_id = ARGV[4], symbol = o[2],
  price = tonumber(ARGV[6]), quantity = tonumber(ARGV[7])})
enqueue(route_of(ARGV[3] .. o[2]), ARGV[2], o[2], ARGV[1], 'c', command, 'h', held, 's', o[4])
return {'OK'}
