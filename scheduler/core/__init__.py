"""The pure core: plain data in, plain data out.

Nothing here imports grpc, redis or celery, reads the clock or the environment; time and
configuration are passed in. This is what the unit and property tests hammer.
"""
