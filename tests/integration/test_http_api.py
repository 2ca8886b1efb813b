"""The read-only HTTP JSON API and /metrics (scheduler/api/http_api.py), over real HTTP against
the real scheduler on real Redis: bodies are the gRPC API's own messages in protobuf's JSON
mapping, errors are JSON with gRPC's codes, and a standby answers 503 naming the leader."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import replace
from typing import Any

import pytest
from google.protobuf import json_format
from switchyard.v1 import scheduler_pb2 as pb

from scheduler.api.http_api import HttpApi
from scheduler.leadership import Role
from scheduler.main import start
from scheduler.metrics import Metrics
from tests.support.redis_server import wait_until


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
    """Status, headers and body of one request (errors included)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def get_json(port: int, path: str) -> tuple[int, Any]:
    status, headers, body = get(port, path)
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    return status, json.loads(body)


@pytest.fixture()
def api(make_scheduler):
    """A scheduler with its HTTP listener on a free port: (scheduler, port)."""
    sched = make_scheduler()
    http_api = HttpApi(sched.metrics.registry)
    port = http_api.serve("127.0.0.1", 0)
    http_api.attach(sched.running.leadership, sched.loop)
    yield sched, port
    http_api.close()


def test_health_reports_queues_workers_and_warnings(api, make_worker):
    sched, port = api
    status, health = get_json(port, "/api/v1/health")
    assert status == 200
    assert health["status"] == "ok" and health["leader"] is True and health["warnings"] == []
    assert (health["workers_connected"], health["queued"], health["active"]) == (0, 0, 0)
    assert health["queues"]["gpu_priority"] == {"pending": 0, "status": "ok"}

    sched.stub.SubmitTask(pb.SubmitTaskRequest(task_name="media.transcode", content_type="video",
                                               allow_unschedulable=True))
    make_worker(sched, "c1", slots=2)
    for _ in range(2):
        sched.stub.SubmitTask(pb.SubmitTaskRequest(task_name="text.summarize", content_type="text"))
    sched.stub.PauseQueue(pb.PauseQueueRequest(queue="gpu_fallback"))

    def settled() -> dict[str, Any] | None:
        _status, body = get_json(port, "/api/v1/health")
        return body if body["active"] == 2 and body["workers_connected"] == 1 else None

    health = wait_until(settled, message="both text tasks handed to c1")
    assert health["status"] == "degraded"
    assert health["queued"] == 1
    assert health["queues"]["gpu_priority"] == {"pending": 1, "status": "no_workers"}
    assert health["queues"]["gpu_fallback"]["status"] == "paused"
    assert health["queues"]["cpu_standard"] == {"pending": 0, "status": "ok"}
    assert health["warnings"] == ["no worker can serve gpu_priority"]


def test_bodies_are_the_grpc_messages_in_protobuf_json(api, make_worker):
    sched, port = api
    ids = [sched.stub.SubmitTask(pb.SubmitTaskRequest(task_name="text.summarize", content_type="text")).task_id
           for _ in range(3)]
    status, body = get(port, f"/api/v1/tasks/{ids[0]}")[0::2]
    assert status == 200
    over_http = json_format.Parse(body, pb.GetTaskResponse())
    assert over_http == sched.stub.GetTask(pb.GetTaskRequest(task_id=ids[0]))
    assert json.loads(body)["task"]["state"] == "TASK_STATE_PENDING"  # enums by name, fields as in the .proto

    status, page = get_json(port, "/api/v1/tasks?state=pending&limit=2")
    assert status == 200
    assert [t["task_id"] for t in page["tasks"]] == [ids[2], ids[1]] and page["next_page_token"]
    status, rest = get_json(port, f"/api/v1/tasks?state=PENDING&limit=2&page_token={page['next_page_token']}")
    assert [t["task_id"] for t in rest["tasks"]] == [ids[0]] and rest["next_page_token"] == ""
    status, none = get_json(port, "/api/v1/tasks?state=running,dispatched&queue=cpu_standard")
    assert none == {"tasks": [], "next_page_token": ""}

    status, body = get(port, "/api/v1/queues")[0::2]
    queues = json_format.Parse(body, pb.ListQueuesResponse())
    assert [q.name for q in queues.queues] == [q.name for q in sched.stub.ListQueues(pb.ListQueuesRequest()).queues]
    cpu = next(q for q in json.loads(body)["queues"] if q["name"] == "cpu_standard")
    assert cpu["pending"] == "3"  # protobuf's JSON mapping writes 64-bit integers as strings

    make_worker(sched, "w1", slots=1)
    wait_until(lambda: get_json(port, "/api/v1/workers")[1]["workers"], message="w1 listed")
    status, workers = get_json(port, "/api/v1/workers")
    assert [w["worker_id"] for w in workers["workers"]] == ["w1"]
    assert workers["workers"][0]["worker_type"] == "WORKER_TYPE_CPU"


def test_errors_are_json_with_grpc_codes(api):
    _sched, port = api
    assert get_json(port, "/api/v1/tasks/nope") == (404, {
        "code": "NOT_FOUND", "message": "task 'nope' does not exist (or its result expired)"})
    status, error = get_json(port, "/api/v1/tasks?state=runing")
    assert status == 400 and error["code"] == "INVALID_ARGUMENT" and "valid states: pending" in error["message"]
    status, error = get_json(port, "/api/v1/tasks?limit=501")
    assert (status, error["code"]) == (400, "INVALID_ARGUMENT") and "over the maximum of 500" in error["message"]
    status, error = get_json(port, "/api/v1/tasks?limit=ten")
    assert (status, error["code"]) == (400, "INVALID_ARGUMENT")
    status, error = get_json(port, "/api/v1/tasks?stat=running")
    assert status == 400 and "unknown query parameter(s) stat" in error["message"]
    status, error = get_json(port, "/api/v1/tasks?queue=nope")
    assert (status, error["code"]) == (404, "NOT_FOUND")
    status, error = get_json(port, "/api/v1/nothing")
    assert (status, error["code"]) == (404, "NOT_FOUND") and "/api/v1/health" in error["message"]
    status, headers, body = get(port, "/api/v1/queues", method="POST")
    assert (status, json.loads(body)["code"], headers["Allow"]) == (405, "UNIMPLEMENTED", "GET, HEAD")


def test_metrics_are_served_on_the_same_port(api):
    _sched, port = api
    status, headers, body = get(port, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "switchyard_leader 1.0" in body


def test_a_standby_answers_503_naming_the_leader_and_still_serves_metrics(api):
    sched, _port = api
    leader_address = sched.running.leadership.address
    metrics = Metrics()
    standby = sched.call(start(replace(sched.settings, listen="127.0.0.1:0"), metrics, wait_serving=None))
    standby_api = HttpApi(metrics.registry)
    port = standby_api.serve("127.0.0.1", 0)
    standby_api.attach(standby.leadership, sched.loop)
    try:
        async def standing_by() -> None:
            while not (standby.leadership.role is Role.STANDBY and standby.leadership.leader_address):
                await standby.leadership.wait_changed()

        sched.call(asyncio.wait_for(standing_by(), 15))
        status, error = get_json(port, "/api/v1/queues")
        assert status == 503
        assert error["code"] == "UNAVAILABLE" and error["leader_address"] == leader_address
        assert leader_address in error["message"]
        status, health = get_json(port, "/api/v1/health")
        assert status == 503
        assert (health["status"], health["leader"], health["leader_address"]) == ("down", False, leader_address)
        status, _headers, body = get(port, "/metrics")
        assert status == 200 and "switchyard_leader 0.0" in body
    finally:
        standby_api.close()
        sched.call(standby.stop(grace=0))
