-- Leader fencing, prepended to every state-changing script (scheduler/state/connection.py):
-- the caller appends the leader lease's key to KEYS and its fencing token to ARGV. A token that
-- is not the lease's (a deposed leader's late write, after a pause or a partition) changes
-- nothing: the script stops here with an error starting FENCED. An empty token is not fenced
-- (tools and the state-store tests that run without a leader).
local fence_key, fence_token = table.remove(KEYS), table.remove(ARGV)
if fence_token ~= '' then
  local lease = redis.call('GET', fence_key)
  if not lease or string.match(lease, '^%d+') ~= fence_token then
    return redis.error_reply('FENCED fencing token ' .. fence_token .. ' no longer holds the leader lease')
  end
end
