--[[
  wrk's script for `spot bench pipeline` (spot/bench/pipeline.py): POST /v1/orders,
  rotating over the bearer tokens and the order bodies.

  Input (after wrk's `--`):
    args[1] a file of bearer tokens, one a line
    args[2] a file of JSON order bodies, one a line
]]
local tokens, bodies
local n = 0

local function lines(path)
  local out = {}
  for line in io.lines(path) do out[#out + 1] = line end
  return out
end

function init(args)
  tokens = lines(args[1])
  bodies = lines(args[2])
end

function request()
  n = n + 1
  local headers = {["Authorization"] = "Bearer " .. tokens[n % #tokens + 1],
                   ["Content-Type"] = "application/json"}
  return wrk.format("POST", "/v1/orders", headers, bodies[n % #bodies + 1])
end
