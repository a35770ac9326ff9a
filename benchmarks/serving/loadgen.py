"""Closed-loop load generators: N concurrent clients, each sending its next request as soon as
the previous one is answered, for a fixed time. REST uses raw keep-alive HTTP/1.1 connections
(no client library in the hot path); gRPC uses grpc.aio with the official stubs (TF Serving's
PredictionService, the Open Inference Protocol's GRPCInferenceService)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class LoadResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float

    def row(self) -> dict:
        return dataclasses.asdict(self)


def summarize(concurrency: int, latencies: list[float], errors: int, seconds: float) -> LoadResult:
    array = np.asarray(latencies) * 1000 if latencies else np.asarray([np.nan])
    return LoadResult(
        concurrency=concurrency,
        requests=len(latencies),
        errors=errors,
        seconds=round(seconds, 3),
        rps=round(len(latencies) / seconds, 1),
        p50_ms=round(float(np.percentile(array, 50)), 3),
        p99_ms=round(float(np.percentile(array, 99)), 3),
    )


async def closed_loop(
    make_worker: Callable[[], Awaitable[Callable[[], Awaitable[bool]]]],
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.5,
) -> LoadResult:
    """Run `concurrency` workers; each worker's `call()` returns True when answered OK."""
    calls = [await make_worker() for _ in range(concurrency)]
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s

    async def worker(call: Callable[[], Awaitable[bool]]) -> None:
        nonlocal errors
        while True:
            sent = time.perf_counter()
            if sent >= stop_at:
                return
            ok = await call()
            done = time.perf_counter()
            if sent >= measure_from:
                if ok:
                    latencies.append(done - sent)
                else:
                    errors += 1

    await asyncio.gather(*(worker(call) for call in calls))
    return summarize(concurrency, latencies, errors, duration_s)


def http_request(host: str, port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def http_worker(host: str, port: int, request: bytes) -> Callable[[], Awaitable[bool]]:
    reader, writer = await asyncio.open_connection(host, port)

    async def call() -> bool:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        return head.startswith(b"HTTP/1.1 200")

    return call


async def rest_load(
    host: str, port: int, path: str, body: bytes, concurrency: int, duration_s: float
) -> LoadResult:
    request = http_request(host, port, path, body)
    return await closed_loop(lambda: http_worker(host, port, request), concurrency, duration_s)


async def grpc_load(
    target: str,
    request: object,
    concurrency: int,
    duration_s: float,
    channels: int = 4,
    protocol: str = "v1",
) -> LoadResult:
    """`request` as TF Serving's Predict (`protocol` "v1") or the Open Inference Protocol's
    ModelInfer ("v2"), over `channels` shared channels."""
    import grpc

    if protocol == "v2":
        from tritonclient.grpc import service_pb2_grpc

        def rpc(channel: grpc.aio.Channel) -> Callable:
            return service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
    else:
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        def rpc(channel: grpc.aio.Channel) -> Callable:
            return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict

    pool = [grpc.aio.insecure_channel(target) for _ in range(channels)]
    methods = [rpc(c) for c in pool]
    counter = iter(range(1 << 30))

    async def make() -> Callable[[], Awaitable[bool]]:
        method = methods[next(counter) % len(methods)]

        async def call() -> bool:
            try:
                await method(request, timeout=30)
                return True
            except grpc.aio.AioRpcError:
                return False

        return call

    try:
        return await closed_loop(make, concurrency, duration_s)
    finally:
        for channel in pool:
            await channel.close()
