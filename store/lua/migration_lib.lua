-- Shared by the hot-shard migration's scripts (control/migration.py): included ahead of
-- a script's own text, so its functions are locals of the script.

-- Redis's clock in ms, as a string: every orchestrator and worker stamps the migration
-- record with one clock, however far apart their own clocks are.
local function now_ms()
  local t = redis.call('TIME')
  return string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
end
