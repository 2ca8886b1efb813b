-- The leader lease: take it when free, renew it when held, hand it back. Any number of
-- schedulers call this about every second; the one holding the lease leads.
-- KEYS[1] = P:leader ("<token> <holder> <address>", expires), KEYS[2] = P:leader:epoch (the last
--           token handed out), KEYS[3] = P:instance (id of this data set)
-- ARGV[1] = 'claim' or 'release', ARGV[2] = holder (unique per scheduler process),
-- ARGV[3] = its advertised address, ARGV[4] = lease time-to-live in ms, ARGV[5] = an instance id
--           to record when the store has none (a new or emptied Redis)
-- A new lease gets the next token (INCR: tokens only grow while the data lives), so every
-- state-changing script can refuse a deposed leader's writes (fence.lua).
-- Returns {'1' held by the caller | '0', token, holder, address, instance id, '1' when this call
-- recorded the instance id | '0'} ('' for token, holder and address when nobody leads).
local op, holder = ARGV[1], ARGV[2]
local instance, recorded = redis.call('GET', KEYS[3]), '0'
if not instance then
  instance, recorded = ARGV[5], '1'
  redis.call('SET', KEYS[3], instance)
end
local lease = redis.call('GET', KEYS[1])
local token, owner, address = '', '', ''
if lease then token, owner, address = string.match(lease, '^(%d+) (%S+) ?(.*)$') end
if op == 'release' then
  if owner == holder then redis.call('DEL', KEYS[1]) end
  return {'0', '', '', '', instance, recorded}
end
if lease and owner == holder then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'1', token, owner, address, instance, recorded}
end
if lease then return {'0', token, owner, address, instance, recorded} end
token = tostring(redis.call('INCR', KEYS[2]))
redis.call('SET', KEYS[1], token .. ' ' .. holder .. ' ' .. ARGV[3], 'PX', ARGV[4])
return {'1', token, holder, ARGV[3], instance, recorded}
