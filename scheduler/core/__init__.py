"""The pure core: plain data in, plain data out.

Nothing here imports grpc, redis or celery, reads the clock or the environment; time and
configuration are passed in (tests/unit/test_core_imports.py keeps it so). This is what the unit
and property tests hammer.

model       the frozen data shared by the core (tasks, workers, queues, decisions)
validate    checks a submission before anything is stored
classify    class, GPU need, queue, priority and retry policy of a submission, with the reason
ordering    priority bounds and aging
retry       retry policy, backoff and the retry / dead-letter decision
ratelimit   per-task-name token buckets
routing     classification rules and fallback chains
placement/  filter registry, scoring and the placement round (plan, explain, wait reasons)
"""
