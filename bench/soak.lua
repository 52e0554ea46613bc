-- wrk script for bench/bench_soak.py: a mix of valid and invalid requests.
-- Each request type has one expected status; every response's status is
-- tallied, and a status outside the expected set (any 5xx above all) is
-- "unexpected". Per status, requests issued and responses received may
-- differ only by those still in flight when wrk stops (at most one per
-- connection); the Python side checks that. done() prints one JSON line.

local valid_rows = {}
for i = 0, 63 do
  valid_rows[#valid_rows + 1] = string.format('{"gre": %d, "gpa": %.2f, "rank": %d}',
    220 + (i * 37) % 580, 2.0 + (i * 0.07) % 2.0, 1 + i % 4)
end
local batch = {}
for i = 1, 10 do batch[#batch + 1] = valid_rows[i] end
local batch_body = '{"instances": [' .. table.concat(batch, ", ") .. ']}'
local json = { ["Content-Type"] = "application/json" }

-- {weight, expected status, predictions per request, method, path, headers, body}
local kinds = {
  {10, 200, 1, "POST", "/predict", json, "row"},
  {3, 200, 10, "POST", "/predict", json, batch_body},
  {3, 200, 1, "GET", "/predict?gre=640&gpa=3.3&rank=2", {}, nil},
  {1, 200, 0, "GET", "/ping", {}, nil},
  {1, 400, 0, "POST", "/predict", json, '{"gre": "abc", "gpa": 4, "rank": 1}'},
  {1, 400, 0, "POST", "/predict", json, '{"gre": 800, "gpa": 4, "rank": 9}'},
  {1, 400, 0, "POST", "/predict", json, '{"gre": 800, "gpa": '},
  {1, 400, 0, "POST", "/predict", json, '{"instances": []}'},
  {1, 415, 0, "POST", "/predict", { ["Content-Type"] = "application/xml" }, "<gre>800</gre>"},
  {1, 404, 0, "GET", "/nope", {}, nil},
  {1, 405, 0, "DELETE", "/predict", {}, nil},
}
local schedule = {}
for k, kind in ipairs(kinds) do
  for _ = 1, kind[1] do schedule[#schedule + 1] = k end
end

local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

-- per-thread counters (globals, so the main state can read them in done())
issued200, issued400, issued404, issued405, issued415 = 0, 0, 0, 0, 0
got200, got400, got404, got405, got415, unexpected, bad_body, predictions = 0, 0, 0, 0, 0, 0, 0, 0
local n = 0

function init(args)
  n = (tid or 1) * 7919
end

function request()
  n = n + 1
  local kind = kinds[schedule[n % #schedule + 1]]
  local status = kind[2]
  _G["issued" .. status] = _G["issued" .. status] + 1
  predictions = predictions + kind[3]
  local body = kind[7]
  if body == "row" then body = valid_rows[n % #valid_rows + 1] end
  return wrk.format(kind[4], kind[5], kind[6], body)
end

function response(status, headers, body)
  local key = "got" .. status
  if _G[key] == nil then
    unexpected = unexpected + 1
    return
  end
  _G[key] = _G[key] + 1
  -- a 200 is a prediction, a batch or the ping; an error is the handler's JSON document
  if status == 200 then
    if not (body:find('"probability":', 1, true) or body:find('"status":"ok"', 1, true)) then
      bad_body = bad_body + 1
    end
  elseif not body:find('"errorType":', 1, true) then
    bad_body = bad_body + 1
  end
end

function done(summary, latency, requests)
  local out = {}
  local names = {"issued200", "issued400", "issued404", "issued405", "issued415", "got200", "got400",
                 "got404", "got405", "got415", "unexpected", "bad_body", "predictions"}
  for _, name in ipairs(names) do
    local total = 0
    for _, t in ipairs(threads) do total = total + (t:get(name) or 0) end
    out[#out + 1] = string.format('"%s": %d', name, total)
  end
  local e = summary.errors
  out[#out + 1] = string.format('"requests": %d, "duration_us": %d, "bytes": %d', summary.requests, summary.duration, summary.bytes)
  out[#out + 1] = string.format('"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}',
    e.connect, e.read, e.write, e.timeout)
  out[#out + 1] = string.format('"p50_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d, "mean_us": %.1f',
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean)
  io.write("SOAK_JSON {" .. table.concat(out, ", ") .. "}\n")
end
