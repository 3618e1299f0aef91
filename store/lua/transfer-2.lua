--[[
  A deposit or withdrawal of available funds, with its ledger entry. Deposits and
  withdrawals take this one path, so the ledger stream the batcher persists always agrees
  with Redis.

  Input:
    KEYS[1] balance:{user}
    KEYS[2] ledger, the stream of schema.streams.LedgerEntry

    ARGV[1] the asset's available field of the balance hash
    ARGV[2] amount: positive a deposit, negative a withdrawal
    ARGV[3] user
    ARGV[4] asset
    ARGV[5] reference: who or what asked for it
    ARGV[6] the asset's locked field of the balance hash
    ARGV[7] the largest balance (available + locked) allowed: schema.wire.MAX_INTEGER, 2^53,
            past which the scripts' doubles no longer hold every integer

  Returns:
    {'OK', available after, ledger entry id}
    {'INSUFFICIENT_BALANCE', available}   a withdrawal of more than is available: nothing done
    {'TOO_LARGE', available}              a deposit past ARGV[7]: nothing done
]]

local available = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
local amount = tonumber(ARGV[2])
if tonumber(available) + amount < 0 then return {'INSUFFICIENT_BALANCE', available} end
if amount > 0 then
  -- The room left, computed first: each step is exact in doubles (every term is an integer
  -- of at most 2^53), where available + locked + amount could round down to the limit.
  local locked = redis.call('HGET', KEYS[1], ARGV[6]) or '0'
  if amount > tonumber(ARGV[7]) - tonumber(available) - tonumber(locked) then
    return {'TOO_LARGE', available}
  end
end
local after = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
local id = redis.call('XADD', KEYS[2], '*', 'user', ARGV[3], 'asset', ARGV[4],
                      'amount', ARGV[2], 'ref', ARGV[5])
return {'OK', string.format('%d', after), id}
