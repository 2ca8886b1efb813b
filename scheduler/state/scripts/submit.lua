-- Accept submissions in groups: each group is written whole, or not at all (an idempotency
-- conflict), independently of the others. One SubmitBatch is one group; concurrent SubmitTask
-- calls are committed together as one group each (group commit).
-- KEYS[1] = P:seq, KEYS[2] = P:pending, KEYS[3] = P:tasks (every kept task, for ListTasks;
--           both zsets scored by the submission sequence)
-- ARGV[1] = P:task: and ARGV[2] = P:idem: (key prefixes: an id or an idempotency key is
--           appended; the task behind an existing key is only known in here),
-- ARGV[3] = idempotency TTL seconds, ARGV[4..] = one JSON array per group (decoded here: one
--           argument per group, not dozens per task, is what keeps big batches fast), of items
--           [id, idempotency key ('' = none), payload digest, [field, value, field, value...]]
--           (the payload, args_json and kwargs_json, is among the fields: stored once, in the
--           task hash)
-- Task hash: writes seq, state, attempt and the given fields; reads payload_digest of the task
--            an idempotency key already names.
-- Returns, per group, {'conflict', index (0-based, in the group), existing task id or ''}
-- (nothing of the group written) or {'ok', id, seq, id, seq, ...} (seq '-1': deduplicated).
local task_prefix, idem_prefix = ARGV[1], ARGV[2]
local ttl = tonumber(ARGV[3])
local ZADD_CHUNK, HSET_CHUNK = 500, 7000

local function read_group(text)
  local items = {}
  for i, row in ipairs(cjson.decode(text)) do
    items[i] = {id = row[1], idem = row[2], digest = row[3], fields = row[4]}
  end
  return items
end

local function conflict(items)
  -- Decide duplicates and conflicts before writing anything (the group is all or none).
  local seen = {}
  for i, item in ipairs(items) do
    if item.idem ~= '' then
      local existing = redis.call('GET', idem_prefix .. item.idem)
      if existing then
        local digest = redis.call('HGET', task_prefix .. existing, 'payload_digest')
        if digest and digest ~= item.digest then return {'conflict', tostring(i - 1), existing} end
        item.existing = existing
      elseif seen[item.idem] then
        if seen[item.idem].digest ~= item.digest then return {'conflict', tostring(i - 1), ''} end
        item.same_as = seen[item.idem]
      else
        seen[item.idem] = item
      end
    end
  end
  return nil
end

local function write(items)
  local fresh = 0
  for _, item in ipairs(items) do
    if not item.existing and not item.same_as then fresh = fresh + 1 end
  end
  local seq = fresh > 0 and (redis.call('INCRBY', KEYS[1], fresh) - fresh) or 0
  local out, members = {'ok'}, {}
  for _, item in ipairs(items) do
    if item.existing or item.same_as then
      table.insert(out, item.existing or item.same_as.id); table.insert(out, '-1')
    else
      seq = seq + 1
      local key, fields = task_prefix .. item.id, item.fields
      table.insert(fields, 'seq'); table.insert(fields, seq)
      table.insert(fields, 'state'); table.insert(fields, 'pending')
      table.insert(fields, 'attempt'); table.insert(fields, 0)
      for first = 1, #fields, HSET_CHUNK do
        redis.call('HSET', key, unpack(fields, first, math.min(#fields, first + HSET_CHUNK - 1)))
      end
      if item.idem ~= '' then redis.call('SET', idem_prefix .. item.idem, item.id, 'EX', ttl) end
      table.insert(members, seq); table.insert(members, item.id)
      table.insert(out, item.id); table.insert(out, tostring(seq))
    end
  end
  for first = 1, #members, 2 * ZADD_CHUNK do
    local last = math.min(#members, first + 2 * ZADD_CHUNK - 1)
    redis.call('ZADD', KEYS[2], unpack(members, first, last))
    redis.call('ZADD', KEYS[3], unpack(members, first, last))
  end
  return out
end

local replies = {}
for g = 4, #ARGV do
  local items = read_group(ARGV[g])
  replies[g - 3] = conflict(items) or write(items)
end
return replies
