# syntax=docker/dockerfile:1
# One image for every Switchyard process: the scheduler, and the agent with its Celery worker.
#
#   docker build -t switchyard .
#   docker run switchyard switchyard-scheduler --redis-url redis://redis:6379/0
#   docker run -e CELERY_BROKER_URL=redis://redis:6379/0 switchyard \
#       switchyard-agent --scheduler sched:50051 --worker-id cpu-1 -- celery -A examples.media_app worker -c 2
#
# The agent runs your Celery app, so a worker image is this one plus your code:
#   FROM switchyard
#   USER 0
#   RUN pip install --no-cache-dir -r requirements.txt    # your app's own dependencies
#   COPY myapp/ /app/myapp/
#   USER 10001:10001
# deploy/compose and deploy/kubernetes run the example app (examples/media_app.py) shipped in /app.
# `--target flower` builds the same image plus Flower (deploy/compose uses it).
# Linted by hadolint in tests/deploy/test_dockerfile.py (CI has no Docker engine to build it).

ARG PYTHON_VERSION=3.11

# ---- build: the project and its dependencies in a virtual environment (wheels only, no compiler)
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/switchyard
WORKDIR /src
# Only what the package needs (.dockerignore keeps the rest of the tree out of the context).
COPY pyproject.toml README.md ./
COPY scheduler/ scheduler/
COPY worker_agent/ worker_agent/
COPY clients/python/ clients/python/
RUN /opt/switchyard/bin/pip install --no-cache-dir .

# ---- base: what every process runs on
FROM python:${PYTHON_VERSION}-slim AS base

# tini is PID 1: it reaps orphans (a Celery pool child whose parent died is re-parented to PID 1,
# and neither the agent nor the scheduler reaps processes they did not start) and forwards
# SIGTERM to the agent, which warm-stops Celery itself. Debian package versions are not pinned:
# the mirror drops a version as soon as a security update replaces it, which would break builds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid, so Kubernetes' runAsNonRoot can check it without a passwd lookup.
RUN groupadd --system --gid 10001 switchyard \
    && useradd --system --uid 10001 --gid switchyard --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin switchyard

COPY --from=build /opt/switchyard /opt/switchyard
WORKDIR /app
COPY examples/__init__.py examples/media_app.py examples/
COPY deploy/docker/healthcheck.py /opt/switchyard/healthcheck.py

# The scheduler listens on every interface inside the container (its own defaults are loopback);
# NVIDIA's container runtime exposes NVML (the agent's GPU probe) only with `utility`.
ENV PATH=/opt/switchyard/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SWITCHYARD_LISTEN=0.0.0.0:50051 \
    SWITCHYARD_METRICS_LISTEN=0.0.0.0:9108 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

USER 10001:10001
# The scheduler's gRPC port (Scheduler, AgentGateway, health, reflection) and its /metrics.
EXPOSE 50051 9108

# A scheduler is healthy while it answers gRPC health, leading or standing by; an agent while it
# runs. deploy/docker/healthcheck.py says why a standby is not unhealthy.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/opt/switchyard/healthcheck.py"]

ENTRYPOINT ["tini", "--"]
CMD ["switchyard-scheduler"]

# ---- flower: the same image plus Flower, for watching the fleet's Celery workers
FROM base AS flower
USER 0
RUN /opt/switchyard/bin/pip install --no-cache-dir "flower==2.2.0"
USER 10001:10001
EXPOSE 5555
CMD ["celery", "flower", "--port=5555"]

# ---- switchyard (the default target): scheduler and agent
FROM base AS switchyard
LABEL org.opencontainers.image.title="switchyard" \
      org.opencontainers.image.description="GPU/CPU-aware task scheduler for Celery fleets, served over gRPC" \
      org.opencontainers.image.licenses="Apache-2.0"
