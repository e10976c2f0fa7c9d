-- wrk script: resolves spread at random over the seeded routes (`t<i % 100>/svc-<i>/prod`
-- for i in 2..BENCH_ROUTES-1), each with its tenant's reader key, so that lookups touch
-- the whole index rather than one hot entry. The requests are prepared in `init`, so
-- the generator's cost per request is the same for every server it is pointed at.
-- Prints the latency percentiles as one JSON line.
local requests = {}
local next_request = 0

init = function(args)
  local keys = {}
  for line in io.lines(os.getenv("BENCH_KEYS_FILE")) do
    local tenant, key = line:match("^(%S+) (%S+)$")
    if tenant then keys[tenant] = key end
  end
  local routes = tonumber(os.getenv("BENCH_ROUTES"))
  local count = math.min(131072, routes * 4)
  math.randomseed(42)
  for j = 1, count do
    local i = math.random(2, routes - 1)
    local tenant = "t" .. (i % 100)
    local path = "/api/v1/routes/resolve?tenant=" .. tenant .. "&service=svc-" .. i .. "&env=prod"
    requests[j] = wrk.format("GET", path, { ["Authorization"] = "Bearer " .. keys[tenant] })
  end
end

request = function()
  next_request = next_request % #requests + 1
  return requests[next_request]
end

done = function(summary, latency, requests_done)
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
