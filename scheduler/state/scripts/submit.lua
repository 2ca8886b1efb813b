-- Accept a batch of submissions: every task is written, or none (an idempotency conflict).
-- KEYS[1] = P:seq, KEYS[2] = P:pending, KEYS[3] = P:counts
-- ARGV[1] = P:task: and ARGV[2] = P:payload: and ARGV[3] = P:idem: (key prefixes: an id or an
--           idempotency key is appended; an existing task's id is only known in here)
-- ARGV[4] = idempotency TTL seconds, ARGV[5] = n, then per task:
--           id, idempotency key ('' = none), payload digest, args_json, kwargs_json,
--           nfields, then nfields values alternating field name and value
-- Task hash: writes seq, state, attempt and the given fields; reads payload_digest of the task
--            an idempotency key already names.
-- Payload hash: args_json, kwargs_json.
-- Returns {'conflict', index (0-based), existing task id or ''} and writes nothing, or
--         {'ok', id, seq, id, seq, ...} where seq is '-1' for a deduplicated task.
local task_prefix, payload_prefix, idem_prefix = ARGV[1], ARGV[2], ARGV[3]
local ttl = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local items = {}
local pos = 6
for i = 1, n do
  local item = {id = ARGV[pos], idem = ARGV[pos + 1], digest = ARGV[pos + 2],
                args = ARGV[pos + 3], kwargs = ARGV[pos + 4]}
  local nf = tonumber(ARGV[pos + 5])
  item.fields = {}
  for j = 1, nf do item.fields[j] = ARGV[pos + 5 + j] end
  pos = pos + 6 + nf
  items[i] = item
end
-- First pass: decide duplicates and conflicts before writing anything (all or none).
local seen = {}
for i, item in ipairs(items) do
  if item.idem ~= '' then
    local existing = redis.call('GET', idem_prefix .. item.idem)
    if existing then
      local digest = redis.call('HGET', task_prefix .. existing, 'payload_digest')
      if digest and digest ~= item.digest then
        return {'conflict', tostring(i - 1), existing}
      end
      item.existing = existing
    elseif seen[item.idem] then
      if seen[item.idem].digest ~= item.digest then return {'conflict', tostring(i - 1), ''} end
      item.same_as = seen[item.idem]
    else
      seen[item.idem] = item
    end
  end
end
local out = {'ok'}
for _, item in ipairs(items) do
  if item.existing then
    table.insert(out, item.existing); table.insert(out, '-1')
  elseif item.same_as then
    table.insert(out, item.same_as.id); table.insert(out, '-1')
  else
    local seq = redis.call('INCR', KEYS[1])
    redis.call('HSET', task_prefix .. item.id, 'seq', seq, 'state', 'pending', 'attempt', 0,
               unpack(item.fields))
    redis.call('HSET', payload_prefix .. item.id, 'args_json', item.args, 'kwargs_json', item.kwargs)
    redis.call('ZADD', KEYS[2], seq, item.id)
    redis.call('HINCRBY', KEYS[3], 'pending', 1)
    if item.idem ~= '' then redis.call('SET', idem_prefix .. item.idem, item.id, 'EX', ttl) end
    table.insert(out, item.id); table.insert(out, tostring(seq))
  end
end
return out
