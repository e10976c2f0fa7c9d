-- wrk script: 95% resolve, 5% writes (each write creates an active route in a service
-- of its own). Prints the same JSON summary as resolve-latency.lua; any answer other
-- than 200 or 201 counts as an error.
local key = os.getenv("BENCH_KEY")
local resolve_path = os.getenv("BENCH_RESOLVE_PATH")
local counter = 0
local threads = {}
bad = 0

setup = function(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

request = function()
  counter = counter + 1
  if counter % 20 == 0 then
    local body = string.format(
      '{"tenant":"bench","service":"m%d-%d-%d","env":"prod","version":"v1","url":"http://10.0.0.9:8080","active":true}',
      id or 0, counter, math.random(1000000000))
    return wrk.format("POST", "/api/v1/routes",
      {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
  end
  return wrk.format("GET", resolve_path, {["Authorization"] = "Bearer " .. key})
end

response = function(status, headers, body)
  if status ~= 200 and status ~= 201 then
    bad = bad + 1
  end
end

done = function(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (t:get("bad") or 0) end
  local socket = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"requests":%d,"errors":%d,"bad_status":%d,"socket_errors":%d,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"p999_ms":%.3f}\n',
    summary.requests,
    bad + socket,
    bad,
    socket,
    summary.requests / seconds,
    latency:percentile(50) / 1000,
    latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000))
end
