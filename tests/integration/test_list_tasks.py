"""ListTasks on the real scheduler and Redis: over gRPC, through the Python client and the
`switchyard tasks` command; and the index it pages through once finished tasks expire."""

from __future__ import annotations

import json

import grpc
import pytest
from switchyard.cli import main as cli_main
from switchyard.client import SchedulerClient
from switchyard.exceptions import InvalidArgument
from switchyard.v1 import scheduler_pb2 as pb
from switchyard.wire import Keys

from tests.support.redis_server import wait_until


def submit(sched, name: str = "text.summarize", content_type: str = "text") -> str:
    return sched.stub.SubmitTask(pb.SubmitTaskRequest(task_name=name, content_type=content_type)).task_id


def test_the_active_tasks_view_and_paging_newest_first(make_scheduler, make_worker, capsys):
    sched = make_scheduler()
    submitted = [submit(sched) for _ in range(4)]
    video = submit(sched, "media.transcode", "video")
    worker = make_worker(sched, "w1", slots=1)
    delivery = wait_until(lambda: worker.deliveries and worker.deliveries[0], message="a hand-out to w1")
    assert worker.claim(delivery)
    assert delivery.task_id == submitted[0]
    wait_until(lambda: sched.stub.GetTask(pb.GetTaskRequest(task_id=delivery.task_id)).task.state
               == pb.TASK_STATE_RUNNING, message="the task to run")

    with SchedulerClient(sched.target) as client:
        running, token = client.list_tasks("running")
        assert [(t.task_id, t.state, t.worker_id) for t in running] == [(submitted[0], "running", "w1")]
        assert token == ""
        first, token = client.list_tasks(page_size=2)
        assert [t.task_id for t in first] == [video, submitted[3]] and token
        rest, token = client.list_tasks(page_size=2, page_token=token)
        assert [t.task_id for t in rest] == [submitted[2], submitted[1]] and token
        assert [t.task_id for t in client.iter_tasks(["pending"], queue="cpu_standard")] == submitted[:0:-1]
        assert [t.task_id for t in client.iter_tasks(task_name="media.transcode")] == [video]
        assert [t.task_id for t in client.iter_tasks(worker_id="w1")] == [submitted[0]]
        with pytest.raises(InvalidArgument, match="unknown task state 'runing'"):
            client.list_tasks("runing")

    with pytest.raises(grpc.RpcError) as too_many:
        sched.stub.ListTasks(pb.ListTasksRequest(page_size=501))
    assert too_many.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size 501 is over the maximum of 500" in too_many.value.details()

    assert cli_main(["--scheduler", sched.target, "tasks", "--state", "running", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(t["task_id"], t["state"], t["worker_id"]) for t in listed["tasks"]] == [(submitted[0], "running", "w1")]
    assert listed["next_page_token"] == ""
    assert cli_main(["--scheduler", sched.target, "tasks", "--limit", "2"]) == 0
    table = capsys.readouterr().out
    assert video in table and submitted[3] in table and submitted[2] not in table
    assert "more tasks: add --page-token " in table


def test_expired_results_leave_the_listing_and_the_sweep_drops_their_entries(make_scheduler, make_worker,
                                                                             fresh_redis):
    sched = make_scheduler(result_ttl_seconds=1)
    done, kept = submit(sched), submit(sched)
    worker = make_worker(sched, "w1", slots=1)
    delivery = wait_until(lambda: worker.deliveries and worker.deliveries[0], message="a hand-out to w1")
    assert delivery.task_id == done and worker.claim(delivery)
    worker.succeed(delivery, "ok")
    redis = fresh_redis.client()
    keys = Keys()
    wait_until(lambda: not redis.exists(keys.task(done)), timeout=15, message="the finished task's result to expire")
    listed = sched.stub.ListTasks(pb.ListTasksRequest()).tasks
    assert [t.task_id for t in listed] == [kept]
    assert redis.zcard(keys.tasks) == 2  # its entry outlives the hash until the sweep passes
    engine = sched.running.engine
    assert sched.call(engine.task_list.sweep_once()) == (0, 1)
    assert redis.zrange(keys.tasks, 0, -1) == [kept]
