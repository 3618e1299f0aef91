--[[
  Shared by the order scripts (place, cancel, replace): the route lookup and the enqueue.
  They run inside each script, so route lookup and enqueue are one atomic step
  (DESIGN.md §4): an order that read the route ACTIVE just before a migration paused it
  would otherwise land behind the drain marker on the old shard.

  The stream entry's fields are schema.streams.CommandEntry's: 'e' the route's epoch,
  then what the caller passes ('c' the command, 'h' the hold, 's' the side).
]]

-- {shard, status, epoch} of `route:{symbol}`; shard is false for a symbol with no route.
local function route_of(route_key)
  return redis.call('HMGET', route_key, 'shard', 'status', 'epoch')
end

-- Into `orders:{shard}`, or `pending:{symbol}` while a migration has the route paused.
local function enqueue(route, pending_prefix, symbol, orders_prefix, ...)
  local stream
  if route[2] == 'MIGRATING' then stream = pending_prefix .. symbol
  else stream = orders_prefix .. route[1] end
  redis.call('XADD', stream, '*', 'e', route[3] or '0', ...)
end

-- schema.orders.TERMINAL: the statuses no event leaves (the contract test holds them equal).
local TERMINAL = {FILLED = true, CANCELED = true, REJECTED = true}
