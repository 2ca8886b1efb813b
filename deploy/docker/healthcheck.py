"""The Switchyard image's Docker HEALTHCHECK: is this container's process able to do its job?

* A scheduler is healthy while its gRPC health service answers, SERVING (it leads) or
  NOT_SERVING (it stands by, or waits for Redis). A standby does its job by standing by: an
  orchestrator that restarted it for not leading would only take the spare away. Which scheduler
  leads is a readiness question, answered by the health status itself (the Kubernetes manifests
  use it as the readinessProbe, and a TCP check as the livenessProbe, for the same reason).
* An agent has no port to ask. Its container lives exactly as long as the agent, which exits
  when its Celery worker does, so a running agent container is a healthy one.

Exit status 0 is healthy, 1 unhealthy (Docker's contract). The scheduler's address is taken from
SWITCHYARD_LISTEN (its port, on 127.0.0.1); SWITCHYARD_HEALTHCHECK_ADDRESS overrides it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_PORT = "50051"
TIMEOUT_SECONDS = 3.0
ALIVE = {health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING}


def runs_scheduler(init_cmdline: Path) -> bool:
    """Whether this container's main process (PID 1, or tini's child) is switchyard-scheduler."""
    try:
        argv = init_cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return any(os.path.basename(arg) == b"switchyard-scheduler" for arg in argv)


def scheduler_address(environ: dict[str, str]) -> str:
    """127.0.0.1 and the port of SWITCHYARD_LISTEN, unless SWITCHYARD_HEALTHCHECK_ADDRESS is set."""
    explicit = environ.get("SWITCHYARD_HEALTHCHECK_ADDRESS")
    if explicit:
        return explicit
    listen = environ.get("SWITCHYARD_LISTEN", "")
    port = listen.rpartition(":")[2] or DEFAULT_PORT
    return f"127.0.0.1:{port}"


def main(init_cmdline: Path = Path("/proc/1/cmdline"), environ: dict[str, str] | None = None) -> int:
    """Check the scheduler's gRPC health (SERVING or NOT_SERVING is alive); agents pass."""
    if not runs_scheduler(init_cmdline):
        return 0
    address = scheduler_address(dict(os.environ) if environ is None else environ)
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_SECONDS
            )
        except grpc.RpcError as exc:
            print(f"scheduler at {address} does not answer gRPC health: {exc.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"scheduler at {address}: {status}")
    return 0 if reply.status in ALIVE else 1


if __name__ == "__main__":
    sys.exit(main())
