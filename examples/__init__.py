"""Examples: an ordinary Celery media app and the local demo that runs it on Switchyard."""
