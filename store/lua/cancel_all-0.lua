--[[
  Cancel every open order and untriggered stop of a user in the given symbols: a CancelAll
  for each symbol, each enqueued behind its route lookup, in one step: every symbol's is
  queued, or (a symbol without a route) none is. The books find the user's orders: a
  CancelAll of a symbol where the user has none does nothing.

  Input:
    ARGV[1] orders stream prefix
    ARGV[2] pending stream prefix
    ARGV[3] route key prefix
    ARGV[4] the user asking
    ARGV[5...] the symbols, one an argument

  Returns:
    {'OK', how many symbols}
    {'NO_ROUTE', symbol}    that symbol has no route: nothing queued
]]
-- include: enqueue

local routes = {}
for i = 5, #ARGV do
  local route = route_of(ARGV[3] .. ARGV[i])
  if not route[1] then return {'NO_ROUTE', ARGV[i]} end
  routes[i] = route
end
for i = 5, #ARGV do
  -- schema.messages.CancelAll, by field name as the worker decodes it (order_id: none).
  local command = cmsgpack.pack({
    action = 'CANCEL_ALL', user_id = ARGV[4], symbol = ARGV[i], order_id = 0})
  enqueue(routes[i], ARGV[2], ARGV[i], ARGV[1], 'c', command, 'h', '0', 's', '')
end
return {'OK', #ARGV - 4}
