-- wrk script: every request creates an active route in a service of its own, so that
-- each one is a real write that also changes what resolve answers (one transaction with
-- its audit row, then a snapshot refresh). Prints the same JSON summary as
-- resolve-latency.lua.
local key = os.getenv("BENCH_KEY")
local counter = 0
local thread_id = 0
local threads = {}

setup = function(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

init = function(args)
  thread_id = id or 0
end

request = function()
  counter = counter + 1
  local body = string.format(
    '{"tenant":"bench","service":"w%d-%d-%d","env":"prod","version":"v1","url":"http://10.0.0.9:8080","active":true}',
    thread_id, counter, math.random(1000000000))
  return wrk.format("POST", "/api/v1/routes",
    {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end

done = function(summary, latency, requests)
  local seconds = summary.duration / 1e6
  io.write(string.format(
    '{"requests":%d,"errors":%d,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"p999_ms":%.3f}\n',
    summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout,
    summary.requests / seconds,
    latency:percentile(50) / 1000,
    latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000))
end
