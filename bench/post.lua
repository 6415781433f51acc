-- wrk script: POST the JSON bodies in $BENCH_BODY_FILE (one body per line) to /invocations,
-- each connection cycling through them, so the load is many different flights, not one.
local bodies = {}
for line in io.lines(os.getenv("BENCH_BODY_FILE")) do
  if #line > 0 then bodies[#bodies + 1] = line end
end
assert(#bodies > 0, "no body in BENCH_BODY_FILE")
local headers = {["Content-Type"] = "application/json"}
local requests = {}
local next_request = 0

function init(args)
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format("POST", nil, headers, body)
  end
end

function request()
  next_request = next_request % #requests + 1
  return requests[next_request]
end

-- Count non-2xx answers so the bench can refuse a run with failures.
function done(summary, latency, requests)
  io.write(string.format("BENCH_JSON {\"requests\": %d, \"duration_us\": %d, \"errors_status\": %d, " ..
    "\"errors_connect\": %d, \"errors_read\": %d, \"errors_write\": %d, \"errors_timeout\": %d, " ..
    "\"p50_us\": %d, \"p90_us\": %d, \"p99_us\": %d, \"max_us\": %d}\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
