-- wrk script: POST redeploy hooks, rotating over API keys and stacks; at the end print one
-- JSON line ("BENCH_JSON {...}") that bench/lib/bench.py reads. From the environment:
--   BENCH_KEYS    comma-separated X-Api-Key values
--   BENCH_STACKS  comma-separated stack names
-- Request i carries key i mod #keys and stack i mod #stacks; each thread starts elsewhere
-- in the rotation.
local function split(s)
  local out = {}
  for item in string.gmatch(s or "", "[^,]+") do out[#out + 1] = item end
  return out
end

local counter = 0
local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  threads[#threads + 1] = thread
end

function init(args)
  local keys = split(os.getenv("BENCH_KEYS"))
  local stacks = split(os.getenv("BENCH_STACKS"))
  assert(#keys > 0 and #stacks > 0, "BENCH_KEYS and BENCH_STACKS must be set")
  local n = math.max(#keys, #stacks)
  requests_ = {}
  for i = 0, n - 1 do
    local body = '{"stackName": "' .. stacks[i % #stacks + 1] .. '"}'
    requests_[i + 1] = wrk.format("POST", wrk.path, {
      ["Content-Type"] = "application/json",
      ["X-Api-Key"] = keys[i % #keys + 1],
    }, body)
  end
  counter = (thread_index or 0) * 7919
end

function request()
  counter = counter + 1
  return requests_[counter % #requests_ + 1]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_s": %.6f, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration / 1e6, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
