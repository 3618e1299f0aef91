--[[
  Cancel an order: the owner check, the status check and the enqueue of a Cancel for the
  symbol the order record names, in one step.

  Input:
    KEYS[1] order:{order id}

    ARGV[1] orders stream prefix
    ARGV[2] pending stream prefix
    ARGV[3] route key prefix
    ARGV[4] the user asking
    ARGV[5] the order id

  Returns:
    {'OK'}
    {'NOT_FOUND'}           no such order, or another user's
    {'NOT_OPEN', status}    the order has ended (a status of TERMINAL)
]]
-- include: enqueue

local o = redis.call('HMGET', KEYS[1], 'user_id', 'symbol', 'status')
if o[1] ~= ARGV[4] then return {'NOT_FOUND'} end
if TERMINAL[o[3]] then return {'NOT_OPEN', o[3]} end
-- schema.messages.Cancel, by field name as the worker decodes it.
local command = cmsgpack.pack({
  action = 'CANCEL', order_id = tonumber(ARGV[5]), user_id = ARGV[4], symbol = o[2]})
enqueue(route_of(ARGV[3] .. o[2]), ARGV[2], o[2], ARGV[1], 'c', command, 'h', '0', 's', '')
return {'OK'}
