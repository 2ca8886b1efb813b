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
  -- Decide duplicates and conflicts before anything else is written (the group is all or
  -- none). A fresh key is claimed for its item at once (SET NX: one command where a GET and a
  -- later SET were two); on a conflict the keys claimed so far are given back.
  local seen, claimed = {}, {}
  local function refuse(index, existing)
    if #claimed > 0 then redis.call('DEL', unpack(claimed)) end
    return {'conflict', tostring(index - 1), existing}
  end
  for i, item in ipairs(items) do
    if item.idem ~= '' then
      local first = seen[item.idem]
      if first then
        if first.digest ~= item.digest then return refuse(i, first.existing or '') end
        item.same_as = first
      else
        local key = idem_prefix .. item.idem
        if redis.call('SET', key, item.id, 'NX', 'EX', ttl) then
          table.insert(claimed, key)
        else
          local existing = redis.call('GET', key)
          local digest = redis.call('HGET', task_prefix .. existing, 'payload_digest')
          if digest and digest ~= item.digest then return refuse(i, existing) end
          item.existing = existing
        end
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
      local first = item.same_as or item
      table.insert(out, first.existing or first.id); table.insert(out, '-1')
    else
      seq = seq + 1
      local key, fields = task_prefix .. item.id, item.fields
      table.insert(fields, 'seq'); table.insert(fields, seq)
      table.insert(fields, 'state'); table.insert(fields, 'pending')
      table.insert(fields, 'attempt'); table.insert(fields, 0)
      for first = 1, #fields, HSET_CHUNK do
        redis.call('HSET', key, unpack(fields, first, math.min(#fields, first + HSET_CHUNK - 1)))
      end
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
