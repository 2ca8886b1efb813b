-- The worker's fenced claim: the one place "may this attempt run?" is decided.
-- KEYS[1] = P:fence:<task_id>, KEYS[2] = P:events
-- ARGV = attempt, worker_id, task_id, ts
-- Moves the fence from "<attempt>" to "<attempt>:started" and records the start in the
-- lifecycle stream, atomically; returns 0 (runs nothing) for a stale or cancelled attempt.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ':started')
redis.call('XADD', KEYS[2], '*', 'type', 'started', 'task_id', ARGV[3],
           'attempt', ARGV[1], 'worker_id', ARGV[2], 'ts', ARGV[4])
return 1
