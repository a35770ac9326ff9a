"""Independent load generators from Debian, beside the project's own (loadgen.py): `wrk` for
REST (HTTP/1.1 keep-alive) and nghttp2's `h2load` for gRPC (HTTP/2, one length-prefixed
PredictRequest per call). Both are C programs, so their own CPU cost per request is far below a
Python client's; where they are not installed the benchmark leaves their rows out.

    apt-get install wrk nghttp2-client
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from loadgen import LoadResult, summarize

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def available() -> dict[str, bool]:
    return {"wrk": shutil.which("wrk") is not None, "h2load": shutil.which("h2load") is not None}


def _threads(concurrency: int) -> int:
    return 1 if concurrency < 2 else 2


def wrk_rest(url: str, body: bytes, concurrency: int, seconds: float) -> LoadResult:
    """`wrk --latency` POSTing `body` as JSON on `concurrency` keep-alive connections."""
    with tempfile.TemporaryDirectory(prefix="wrk-") as folder:
        body_file = Path(folder) / "body.json"
        body_file.write_bytes(body)
        script = Path(folder) / "post.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            f'wrk.body = io.open("{body_file}", "rb"):read("*a")\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        command = [
            "wrk",
            f"-t{_threads(concurrency)}",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    if not requests:
        raise RuntimeError(f"wrk got no answer from {url}:\n{out}")
    elapsed = _duration(re.search(r"requests in ([\d.]+\w+),", out).group(1)) / 1000
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    if errors >= requests:
        raise RuntimeError(f"wrk: every answer from {url} was an error:\n{out}")
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(x) for x in socket_errors.groups())
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.MULTILINE))
    return LoadResult(
        concurrency=concurrency,
        requests=requests - errors,
        errors=errors,
        seconds=round(elapsed, 3),
        rps=round((requests - errors) / elapsed, 1),
        p50_ms=round(_duration(percentiles["50"]), 3),
        p99_ms=round(_duration(percentiles["99"]), 3),
    )


def _duration(text: str) -> float:
    """wrk's '829.00us' / '1.16ms' / '3.10s' in milliseconds."""
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNITS[unit]


def grpc_frame(request: object) -> bytes:
    """One gRPC message on the wire: uncompressed flag, 4-byte big-endian length, protobuf."""
    data = request.SerializeToString()
    return b"\x00" + struct.pack(">I", len(data)) + data


def h2load_grpc(
    url: str, request: object, concurrency: int, seconds: float, warmup_s: int = 1
) -> LoadResult:
    """`h2load` sending the unary call `request` to `url` (http://host:port/package.Service/
    Method) on `concurrency` HTTP/2 connections, one stream each, measured after `warmup_s`
    whole seconds. Latencies come from its per-request log (the measured period only).
    h2load sees HTTP status only; the gRPC status is in the trailers, so the caller checks the
    server's own counters for non-OK answers."""
    with tempfile.TemporaryDirectory(prefix="h2load-") as folder:
        data = Path(folder) / "request.bin"
        data.write_bytes(grpc_frame(request))
        log = Path(folder) / "requests.tsv"
        duration = max(1, round(seconds))
        command = [
            "h2load",
            "-D",
            str(duration),
            "--warm-up-time",
            str(warmup_s),
            "-c",
            str(concurrency),
            "-m",
            "1",
            "-t",
            str(_threads(concurrency)),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-d",
            str(data),
            "--log-file",
            str(log),
            url,
        ]
        subprocess.run(command, capture_output=True, text=True, check=True)
        rows = np.loadtxt(log, dtype=np.int64, ndmin=2) if log.stat().st_size else np.empty((0, 3))
    ok = rows[:, 1] == 200 if len(rows) else np.zeros(0, bool)
    latencies = (rows[ok, 2] / 1e6).tolist() if len(rows) else []
    return summarize(concurrency, latencies, int((~ok).sum()), duration)
