-- wrk script for the credentials benchmark. Configured by environment variables:
--   BENCH_OP    get | list | search | update | reveal | create | delete | mixed | proxy | direct
--               (proxy: GET /api/v1/proxy/<id>/v1/ping; direct: GET /v1/ping, for the upstream itself)
--   BENCH_KEY   API key (sent as Authorization: Bearer; the HTTP floor ignores it)
--   BENCH_IDS   file of credential ids, one a line (get, update, reveal, delete, mixed)
--   BENCH_REVEAL_IDS  file of revealable ids (mixed)
-- delete: thread k of n takes ids k, k+n, k+2n ... so no id is deleted twice.
-- done() prints one JSON line with the counts and latency percentiles (microseconds).

local op = os.getenv("BENCH_OP") or "get"
local key = os.getenv("BENCH_KEY") or ""
local base = "/api/v1/credentials"
local words = {"stripe", "github", "openai", "twilio", "slack", "aws", "gcp", "azure", "sendgrid", "mailgun"}
local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

local function load(path)
   local list = {}
   if path and path ~= "" then
      for line in io.lines(path) do
         if line ~= "" then list[#list + 1] = line end
      end
   end
   return list
end

function init(args)
   ids = load(os.getenv("BENCH_IDS"))
   reveal_ids = load(os.getenv("BENCH_REVEAL_IDS"))
   nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
   cursor = (tid or 0) + 1
   counter = 0
   math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
   wrk.headers["Authorization"] = "Bearer " .. key
   wrk.headers["Content-Type"] = "application/json"
end

local function pick(list)
   return list[math.random(#list)]
end

local function make(kind)
   counter = counter + 1
   if kind == "get" then
      return wrk.format("GET", base .. "/" .. pick(ids))
   elseif kind == "list" then
      return wrk.format("GET", base .. "?skip=" .. (100 * math.random(0, 9)) .. "&limit=100")
   elseif kind == "search" then
      return wrk.format("GET", base .. "?search=" .. pick(words) .. "&limit=100")
   elseif kind == "update" then
      return wrk.format("PUT", base .. "/" .. pick(ids), nil,
         '{"label":"updated ' .. math.random(1000000) .. '"}')
   elseif kind == "reveal" then
      local list = (#reveal_ids > 0) and reveal_ids or ids
      return wrk.format("POST", base .. "/" .. pick(list) .. "/reveal", nil, "")
   elseif kind == "create" then
      return wrk.format("POST", base, nil,
         '{"label":"' .. pick(words) .. ' bench ' .. tid .. '-' .. counter .. '","auth_type":"api_key",' ..
         '"credential_scope":"workspace","credentials":{"api_key":"sk_bench_' .. math.random(1000000000) .. '"}}')
   elseif kind == "proxy" then
      return wrk.format("GET", "/api/v1/proxy/" .. pick(ids) .. "/v1/ping")
   elseif kind == "direct" then
      return wrk.format("GET", "/v1/ping")
   elseif kind == "delete" then
      local id = ids[cursor]
      cursor = cursor + nthreads
      if id == nil then id = "00000000-0000-0000-0000-000000000000" end
      return wrk.format("DELETE", base .. "/" .. id)
   end
end

local mix = {"get", "get", "get", "get", "list", "list", "search", "update", "update", "reveal", "reveal", "create"}

function request()
   if op == "mixed" then
      return make(pick(mix))
   end
   return make(op)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      '{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
