-- wrk script for bench/run.sh: POSTs an OpenAI chat completion request.
--
-- Environment:
--   BENCH_KEY     bearer token sent in Authorization (empty: no header)
--   BENCH_STREAM  "1" adds "stream": true (the whole SSE response is one wrk request)
--
-- At the end it prints one machine-readable line, parsed by run.sh:
--   BENCH requests=N sent=N rps=X p50_us=N p99_us=N ...
-- `requests` is what wrk counts (completed responses); `sent` counts every request written,
-- including the ones still in flight when the duration ran out.

local key = os.getenv("BENCH_KEY") or ""
local stream = os.getenv("BENCH_STREAM") == "1"

wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello world"}]'
    .. (stream and ',"stream":true}' or '}')
wrk.headers["Content-Type"] = "application/json"
if key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Built once per thread; request() only bumps a counter, so the per-request Lua cost is tiny
-- and the same for every target.
local req
sent = 0

function init(args)
  req = wrk.format()
end

function request()
  sent = sent + 1
  return req
end

function done(summary, latency, requests)
  local total_sent = 0
  for _, t in ipairs(threads) do
    total_sent = total_sent + (t:get("sent") or 0)
  end
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "BENCH requests=%d sent=%d duration_s=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d "
      .. "mean_us=%.1f max_us=%d non2xx=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d\n",
    summary.requests, total_sent, secs, summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
