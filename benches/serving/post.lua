-- wrk script: POST one JSON body per request, cycling through BODIES_FILE (one body a line),
-- with the Authorization header from the TOKEN environment variable.
local bodies = {}
local index = 0

function init(args)
  for line in io.lines(os.getenv("BODIES_FILE")) do
    bodies[#bodies + 1] = line
  end
  -- Threads start at different places in the list.
  index = math.random(#bodies)
end

function request()
  index = index % #bodies + 1
  local headers = { ["Content-Type"] = "application/json" }
  local token = os.getenv("TOKEN")
  if token and token ~= "" then
    headers["Authorization"] = "Bearer " .. token
  end
  return wrk.format("POST", nil, headers, bodies[index])
end

-- Counts answers other than 200, which wrk's summary only reports as "Non-2xx".
local failures = 0
function response(status)
  if status ~= 200 then
    failures = failures + 1
  end
end
