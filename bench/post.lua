-- wrk script: a ~1.2 KB chat/completions request, spread over 32 sessions.
-- BENCH_HEADERS adds "Name: value" lines (e.g. a session under a budget).
local n = 0
local body = '{"model":"gpt-4o-mini","max_tokens":64,"messages":[' ..
  '{"role":"system","content":"You are a helpful assistant that answers briefly and precisely."},' ..
  '{"role":"user","content":"' .. string.rep("Summarise the quarterly figures for the board. ", 22) .. '"}]}'
local extra = {}
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local k, v = line:match("^([^:]+):%s*(.*)$")
  if k then extra[k] = v end
end
request = function()
  n = n + 1
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer sk-bench",
                   ["X-Session-Id"] = "bench-" .. (n % 32)}
  for k, v in pairs(extra) do headers[k] = v end
  return wrk.format("POST", nil, headers, body)
end
