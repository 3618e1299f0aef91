--[[
  wrk's script for `spot bench pipeline` (spot/bench/pipeline.py): POST /v1/orders,
  rotating over the bearer tokens and the order bodies; or POST /api/v3/order, rotating
  over requests signed beforehand (wrk's Lua has no HMAC).

  Input (after wrk's `--`):
    args[1] "v1" or "v3"
    v1: args[2] a file of bearer tokens, one a line
        args[3] a file of JSON order bodies, one a line
    v3: args[2] a file of signed requests, one a line: the API key, a space, the form body
]]
local api, tokens, bodies, signed
local n = 0

local function lines(path)
  local out = {}
  for line in io.lines(path) do out[#out + 1] = line end
  return out
end

function init(args)
  api = args[1]
  if api == "v3" then
    signed = {}
    for _, line in ipairs(lines(args[2])) do
      local key, body = line:match("^(%S+) (%S+)$")
      signed[#signed + 1] = {key, body}
    end
  else
    tokens = lines(args[2])
    bodies = lines(args[3])
  end
end

function request()
  n = n + 1
  if api == "v3" then
    local key, body = unpack(signed[n % #signed + 1])
    local headers = {["X-MBX-APIKEY"] = key,
                     ["Content-Type"] = "application/x-www-form-urlencoded"}
    return wrk.format("POST", "/api/v3/order", headers, body)
  end
  local headers = {["Authorization"] = "Bearer " .. tokens[n % #tokens + 1],
                   ["Content-Type"] = "application/json"}
  return wrk.format("POST", "/v1/orders", headers, bodies[n % #bodies + 1])
end
