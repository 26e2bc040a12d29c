-- wrk script: a ~1.2 KB chat/completions request, spread over 32 sessions.
local n = 0
local body = '{"model":"gpt-4o-mini","max_tokens":64,"messages":[' ..
  '{"role":"system","content":"You are a helpful assistant that answers briefly and precisely."},' ..
  '{"role":"user","content":"' .. string.rep("Summarise the quarterly figures for the board. ", 22) .. '"}]}'
request = function()
  n = n + 1
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer sk-bench",
                   ["X-Session-Id"] = "bench-" .. (n % 32)}
  return wrk.format("POST", nil, headers, body)
end
