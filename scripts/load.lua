-- wrk script for scripts/load.sh: sends pre-signed webhook requests; each thread takes every
-- n-th line, so no two threads send the same event. Args: requests-file pace-ms threads.
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local reqs = {}
local i = 0
local pace = 0

function init(args)
  pace = tonumber(args[2] or "0")
  local threads = tonumber(args[3] or "1")
  local k = 0
  for line in io.lines(args[1]) do
    if k % threads == tid then
      local ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", "/webhooks/zendesk", {
        ["Content-Type"] = "application/json",
        ["X-Zendesk-Webhook-Signature"] = sig,
        ["X-Zendesk-Webhook-Signature-Timestamp"] = ts,
      }, body)
    end
    k = k + 1
  end
end

function request()
  i = i % #reqs + 1
  return reqs[i]
end

function delay()
  return pace
end
