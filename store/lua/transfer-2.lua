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

  Returns:
    {'OK', available after, ledger entry id}
    {'INSUFFICIENT_BALANCE', available}   a withdrawal of more than is available: nothing done
]]

local available = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
if tonumber(available) + tonumber(ARGV[2]) < 0 then return {'INSUFFICIENT_BALANCE', available} end
local after = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
local id = redis.call('XADD', KEYS[2], '*', 'user', ARGV[3], 'asset', ARGV[4],
                      'amount', ARGV[2], 'ref', ARGV[5])
return {'OK', string.format('%d', after), id}
