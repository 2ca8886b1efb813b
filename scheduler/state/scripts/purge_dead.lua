-- Delete dead letters for good (only tasks that are still dead-lettered).
-- KEYS[1] = P:dlq, KEYS[2] = P:counts
-- ARGV[1] = P:task:, ARGV[2] = P:payload:, ARGV[3] = P:fence: (key prefixes: a task id is
--           appended), ARGV[4..] = task ids
-- Task hash: reads state; deletes the task, payload and fence keys.
-- Returns how many tasks were deleted.
local task_prefix, payload_prefix, fence_prefix = ARGV[1], ARGV[2], ARGV[3]
local purged = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local task = task_prefix .. id
  redis.call('ZREM', KEYS[1], id)
  if redis.call('HGET', task, 'state') == 'dead_lettered' then
    redis.call('DEL', task, payload_prefix .. id, fence_prefix .. id)
    redis.call('HINCRBY', KEYS[2], 'dead_lettered', -1)
    purged = purged + 1
  end
end
return purged
