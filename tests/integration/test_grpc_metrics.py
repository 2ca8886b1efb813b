"""The gRPC metrics on a real grpc.aio server over loopback, both ways they can be installed (as
an interceptor, and as the handler wrapper the scheduler applies at registration): every kind of
call is counted as go-grpc-prometheus counts it (started, handled with its code, timed,
messages), a stream when it ends, and a method the server does not have is not counted at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from scheduler.api.grpc_metrics import GO_CODE_NAMES, MetricsInterceptor, split_method
from scheduler.api.registration import WrappingRegistrar
from scheduler.metrics import Metrics

SERVICE = "test.v1.Probe"
pytestmark = pytest.mark.timeout(60)


async def _echo(request: bytes, _context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


async def _missing(_request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    raise AssertionError("abort returns no more")


async def _bug(_request: bytes, _context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise RuntimeError("a bug in a servicer")


async def _count(request: bytes, _context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
    for _ in range(int(request)):
        yield b"tick"


async def _hang(_request: bytes, _context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
    yield b"first"
    await asyncio.Event().wait()  # as a WatchTask waits for the next change


async def _sum(requests: AsyncIterator[bytes], _context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return str(sum([len(r) async for r in requests])).encode()


async def _chat(requests: AsyncIterator[bytes],
                context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
    async for request in requests:
        if request == b"bye":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "said bye")
        yield request.upper()


HANDLERS = {
    "Echo": grpc.unary_unary_rpc_method_handler(_echo),
    "Missing": grpc.unary_unary_rpc_method_handler(_missing),
    "Bug": grpc.unary_unary_rpc_method_handler(_bug),
    "Count": grpc.unary_stream_rpc_method_handler(_count),
    "Hang": grpc.unary_stream_rpc_method_handler(_hang),
    "Sum": grpc.stream_unary_rpc_method_handler(_sum),
    "Chat": grpc.stream_stream_rpc_method_handler(_chat),
}


INSTALLED = {"how": "interceptor"}


@pytest.fixture(autouse=True, params=["interceptor", "registration"])
def installed(request: pytest.FixtureRequest) -> None:
    """Every test runs against both ways of installing the metrics."""
    INSTALLED["how"] = request.param


def run(scenario: Callable[[grpc.aio.Channel, Metrics], Awaitable[None]]) -> Metrics:
    """A server with the metrics on a free loopback port; the scenario talks to it."""
    metrics = Metrics()

    async def main() -> None:
        if INSTALLED["how"] == "interceptor":
            server = grpc.aio.server(interceptors=[MetricsInterceptor(metrics)])
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
        else:
            server = grpc.aio.server()
            WrappingRegistrar(server, [MetricsInterceptor(metrics).wrap]).add_registered_method_handlers(
                SERVICE, HANDLERS)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await scenario(channel, metrics)
        finally:
            await server.stop(0)

    asyncio.run(main())
    return metrics


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"grpc_service": SERVICE, **labels}) or 0.0


def test_unary_calls_are_counted_with_the_code_they_end_with() -> None:
    async def scenario(channel: grpc.aio.Channel, _metrics: Metrics) -> None:
        assert await channel.unary_unary(f"/{SERVICE}/Echo")(b"hi") == b"hi"
        for method, code in (("Missing", grpc.StatusCode.NOT_FOUND), ("Bug", grpc.StatusCode.UNKNOWN)):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await channel.unary_unary(f"/{SERVICE}/{method}")(b"x")
            assert failed.value.code() is code

    metrics = run(scenario)
    unary = {"grpc_type": "unary"}
    for method, code in (("Echo", "OK"), ("Missing", "NotFound"), ("Bug", "Unknown")):
        assert value(metrics, "grpc_server_started_total", grpc_method=method, **unary) == 1.0
        assert value(metrics, "grpc_server_handled_total", grpc_method=method, grpc_code=code, **unary) == 1.0
        assert value(metrics, "grpc_server_handling_seconds_count", grpc_method=method, **unary) == 1.0
    assert value(metrics, "grpc_server_msg_sent_total", grpc_method="Echo", **unary) == 1.0
    assert value(metrics, "grpc_server_msg_sent_total", grpc_method="Missing", **unary) == 0.0


def test_a_stream_is_counted_handled_when_it_ends_with_its_messages() -> None:
    async def scenario(channel: grpc.aio.Channel, metrics: Metrics) -> None:
        labels = {"grpc_type": "bidi_stream", "grpc_method": "Chat"}
        call = channel.stream_stream(f"/{SERVICE}/Chat")()
        await call.write(b"a")
        assert await call.read() == b"A"
        # Open and talking: started, not handled yet.
        assert value(metrics, "grpc_server_started_total", **labels) == 1.0
        assert value(metrics, "grpc_server_handling_seconds_count", **labels) == 0.0
        await call.write(b"bye")
        assert await call.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert [r async for r in channel.unary_stream(f"/{SERVICE}/Count")(b"3")] == [b"tick"] * 3

        async def three() -> AsyncIterator[bytes]:
            for item in (b"a", b"bb", b"ccc"):
                yield item
        assert await channel.stream_unary(f"/{SERVICE}/Sum")(three()) == b"6"

    metrics = run(scenario)
    chat = {"grpc_type": "bidi_stream", "grpc_method": "Chat"}
    assert value(metrics, "grpc_server_handled_total", grpc_code="FailedPrecondition", **chat) == 1.0
    assert value(metrics, "grpc_server_msg_received_total", **chat) == 2.0
    assert value(metrics, "grpc_server_msg_sent_total", **chat) == 1.0
    count = {"grpc_type": "server_stream", "grpc_method": "Count"}
    assert value(metrics, "grpc_server_handled_total", grpc_code="OK", **count) == 1.0
    assert value(metrics, "grpc_server_msg_sent_total", **count) == 3.0
    summed = {"grpc_type": "client_stream", "grpc_method": "Sum"}
    assert value(metrics, "grpc_server_handled_total", grpc_code="OK", **summed) == 1.0
    assert value(metrics, "grpc_server_msg_received_total", **summed) == 3.0


def test_a_call_the_client_cancels_is_counted_canceled() -> None:
    async def scenario(channel: grpc.aio.Channel, metrics: Metrics) -> None:
        call = channel.unary_stream(f"/{SERVICE}/Hang")(b"")
        assert await call.read() == b"first"
        call.cancel()
        labels = {"grpc_type": "server_stream", "grpc_method": "Hang", "grpc_code": "Canceled"}
        for _ in range(500):  # the server learns of the cancel asynchronously
            if value(metrics, "grpc_server_handled_total", **labels):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the cancelled stream was never counted as handled")

    run(scenario)


def test_a_method_the_server_does_not_have_is_not_counted() -> None:
    async def scenario(channel: grpc.aio.Channel, _metrics: Metrics) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await channel.unary_unary(f"/{SERVICE}/NoSuchMethod")(b"x")
        assert failed.value.code() is grpc.StatusCode.UNIMPLEMENTED

    metrics = run(scenario)
    methods = {s.labels.get("grpc_method") for f in metrics.registry.collect() if f.name.startswith("grpc_server")
               for s in f.samples}
    assert "NoSuchMethod" not in methods


def test_codes_are_spelt_as_go_spells_them() -> None:
    assert set(GO_CODE_NAMES) == set(grpc.StatusCode)
    assert GO_CODE_NAMES[grpc.StatusCode.CANCELLED] == "Canceled"  # Go's spelling, one l
    assert split_method("/switchyard.v1.Scheduler/SubmitTask") == ("switchyard.v1.Scheduler", "SubmitTask")
