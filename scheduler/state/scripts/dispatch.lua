-- Hand out: commit "task T goes to worker W as attempt N" and put the Celery message on W's own
-- queue, atomically, for every hand-out of a placement round. A crash can never leave a
-- committed hand-out unpublished or a published one uncommitted.
-- KEYS[1] = P:pending
-- ARGV[1] = P:task:, ARGV[2] = P:inflight: (key prefixes), ARGV[3] = now,
-- ARGV[4] = the protocol-2 body's embed JSON, ARGV[5] = the msgpack body (base64) of a
--           by-reference msgpack hand-out, ARGV[6] = the hand-outs, a JSON array with one array
--           of 12 strings per hand-out (one argument, decoded here in C: far cheaper for the
--           scheduler than 12 arguments per hand-out): task id, worker id, attempt, payload mode ('0' JSON body from the stored
--           args/kwargs, '1' JSON body without them: by reference, the payload stays here,
--           '2' the stored msgpack body celery_body, '3' ARGV[5]: msgpack by reference),
--           GPU index ('' = none), served queue ('' = its own), placement reason, Celery queue
--           (the worker's list), then the message envelope in four pieces (see
--           scheduler/dispatch.py): the body, argsrepr and kwargsrepr go between them.
-- Task hash: reads state, attempt (and args_json, kwargs_json when they travel inline, and
--            celery_body for mode '2'); writes state, worker, attempt, fence, dispatched_at,
--            gpu_index, served_queue, started_at, progress, progress_msg, reason.
-- Returns 1 (handed out) or 0 (no longer pending at that attempt: nothing written) per hand-out.
local task_prefix, inflight_prefix, now, embed, empty_msgpack = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local REPR_LIMIT, CHUNK = 1024, 500
local out, gone, by_worker, by_queue = {}, {}, {}, {}

-- Celery shows argsrepr in events and Flower; keep it short and valid UTF-8.
local function clip(text)
  if #text <= REPR_LIMIT then return text end
  local cut = REPR_LIMIT
  while cut > 0 do
    local byte = string.byte(text, cut + 1)
    if byte < 128 or byte >= 192 then break end
    cut = cut - 1
  end
  return string.sub(text, 1, cut) .. '...'
end

local function add(map, key, value)
  local list = map[key]
  if not list then list = {}; map[key] = list end
  table.insert(list, value)
end

for i, row in ipairs(cjson.decode(ARGV[6])) do
  local id, worker, attempt, mode = row[1], row[2], row[3], row[4]
  local by_ref = mode == '1' or mode == '3'
  local task = task_prefix .. id
  local cur
  if mode == '0' then
    cur = redis.call('HMGET', task, 'state', 'attempt', 'args_json', 'kwargs_json')
  elseif mode == '2' then
    cur = redis.call('HMGET', task, 'state', 'attempt', 'args_json', 'kwargs_json', 'celery_body')
  else
    cur = redis.call('HMGET', task, 'state', 'attempt')
  end
  -- A msgpack hand-out whose stored body is missing is not made (never expected: the body is
  -- written with the task); a message without its arguments would run the task wrongly.
  if cur[1] == 'pending' and tonumber(cur[2] or '0') + 1 == tonumber(attempt)
      and (mode ~= '2' or cur[5]) then
    redis.call('HSET', task, 'state', 'dispatched', 'worker', worker, 'attempt', attempt,
               'fence', attempt, 'dispatched_at', now, 'gpu_index', row[5],
               'served_queue', row[6], 'started_at', '', 'progress', '0',
               'progress_msg', '', 'reason', row[7])
    local args, kwargs = '[]', '{}'
    if not by_ref then args, kwargs = cur[3] or '[]', cur[4] or '{}' end
    local body
    if mode == '0' or mode == '1' then
      body = cjson.encode('[' .. args .. ', ' .. kwargs .. ', ' .. embed .. ']')
    else
      -- base64 needs no JSON escaping.
      body = '"' .. (mode == '2' and cur[5] or empty_msgpack) .. '"'
    end
    add(by_queue, row[8], row[9] .. body .. row[10]
        .. cjson.encode(clip(args)) .. row[11] .. cjson.encode(clip(kwargs)) .. row[12])
    add(by_worker, worker, id)
    table.insert(gone, id)
    out[i] = 1
  else
    out[i] = 0
  end
end
for first = 1, #gone, CHUNK do
  redis.call('ZREM', KEYS[1], unpack(gone, first, math.min(#gone, first + CHUNK - 1)))
end
for worker, ids in pairs(by_worker) do
  for first = 1, #ids, CHUNK do
    redis.call('SADD', inflight_prefix .. worker, unpack(ids, first, math.min(#ids, first + CHUNK - 1)))
  end
end
-- kombu's consumer pops from the right: pushing in round order keeps priority order.
for queue, messages in pairs(by_queue) do
  for first = 1, #messages, CHUNK do
    redis.call('LPUSH', queue, unpack(messages, first, math.min(#messages, first + CHUNK - 1)))
  end
end
return out
