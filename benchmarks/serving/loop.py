"""Serving benchmark of the loop's costs: prediction logging at sampling 0, 0.1 and 1.0 and shadow
traffic at fraction 1.0, side by side in one embedded server, in one run on this machine.

    python benchmarks/serving/loop.py [--model artifacts/runs/cnn-digits | --stand-in]
        [--seconds 4] [--rounds 2] [--concurrency 1,8,64] [--update-results]

One server process serves six copies of the same model, each configured one way: `plain` (no
logging_config), `log_0`, `log_0.1`, `log_1` (a logging_config at that sampling rate),
`shadow_1` (no logging_config; `serving.shadow.shadow_1: {label: challenger, fraction: 1.0}`,
which mirrors every request to a second version and logs both answers) and `shadow_1p` (the
same with `process: true`: the shadow version answers in its own process at the lowest CPU
priority). Per concurrency the six
loads run back to back, interleaved over `--rounds` rounds (medians reported), with the
project's closed-loop generator (loadgen.py) on loopback, REST and gRPC (`--no-grpc`: REST only).

Results go to artifacts/benchmarks/serving-loop/ (untracked) or `--output`; only
`--update-results` writes benchmarks/serving/loop_results.json and the section of
benchmarks/RESULTS.md between its own markers (the other sections are left alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(HERE)]
import run  # noqa: E402
from loadgen import LoadResult, grpc_load, rest_load  # noqa: E402
from run import (  # noqa: E402
    command_line,
    free_port,
    load_model,
    median_of,
    publish,
    run_loads,
    stop,
    wait_http,
)

from benchmarks.sections import write_section  # noqa: E402  (the repository root first)

SECTION = "serving-loop-benchmark"  # of RESULTS.md, between its markers
MODELS = {  # served name -> logging sampling rate (None: no logging_config)
    "plain": None,
    "log_0": 0.0,
    "log_0.1": 0.1,
    "log_1": 1.0,
    "shadow_1": None,
    "shadow_1p": None,
}
SHADOWED = "shadow_1"
SHADOWS = (SHADOWED, "shadow_1p")  # mirrored in the serving process; in the shadow's own


def models_config(repository: Path) -> str:
    """The six models; each shadow model serves version 2 and labels version 1 `challenger`."""
    blocks = []
    for name, rate in MODELS.items():
        lines = [
            "  config {",
            f'    name: "{name}"',
            f'    base_path: "{repository / name}"',
            '    model_platform: "tensorflow"',
        ]
        if name in SHADOWS:
            lines += [
                "    model_version_policy { specific { versions: 1 versions: 2 } }",
                '    version_labels { key: "challenger" value: 1 }',
            ]
        if rate is not None:
            lines += [
                "    logging_config {",
                f'      log_collector_config {{ type: "file" filename_prefix: "{name}/p" }}',
                f"      sampling_config {{ sampling_rate: {rate} }}",
                "    }",
            ]
        blocks.append("\n".join([*lines, "  }"]))
    return "model_config_list {\n" + "\n".join(blocks) + "\n}\n"


def export_models(model: Any, images: np.ndarray, workdir: Path) -> Path:
    from kerasops.serving.config import ServingConfig
    from kerasops.serving.export import export_saved_model

    repository = workdir / "models"
    config = ServingConfig(
        model_repository=str(repository), models_config=str(workdir / "ignored.config")
    )
    first = export_saved_model(model, "plain", config=config, warmup_examples=images)
    for name in MODELS:
        versions = (1, 2) if name in SHADOWS else (1,)
        for version in versions:
            if (name, version) != ("plain", 1):
                shutil.copytree(first.path, repository / name / str(version))
    (workdir / "models.config").write_text(models_config(repository))
    return repository


def serve(workdir: Path, repository: Path) -> tuple[subprocess.Popen, int, int]:
    rest, grpc_port = free_port(), free_port()
    params = workdir / "params.yaml"
    params.write_text(
        "serving:\n"
        f"  prediction_log_dir: {workdir / 'logs'}\n"
        "  prediction_log_max_file_mb: 16\n"
        f"  shadow: {{{SHADOWED}: {{label: challenger, fraction: 1.0}},\n"
        "           shadow_1p: {label: challenger, fraction: 1.0, process: true}}\n"
    )
    command = [
        sys.executable, "-m", "kerasops", "--params", str(params), "serve",
        "--models-config", str(workdir / "models.config"), "--model-repository", str(repository),
        "--rest-port", str(rest), "--grpc-port", str(grpc_port),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{rest}/readyz", 180, process)
    return process, rest, grpc_port


def measure(
    rest: int, grpc_port: int, images: np.ndarray, want: np.ndarray, args: argparse.Namespace
) -> dict[str, dict[str, list[LoadResult]]]:
    """Per protocol and model, one median LoadResult per concurrency."""
    import httpx
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    one = images[:1]
    body = json.dumps({"instances": one.tolist()}).encode()
    for name in MODELS:  # every copy answers as the model does
        answer = httpx.post(f"http://127.0.0.1:{rest}/v1/models/{name}:predict", content=body)
        (row,) = answer.json()["predictions"]
        np.testing.assert_allclose([row["probabilities"]], want[:1], atol=1e-5)
    deadline = time.monotonic() + 600  # shadow_1p's worker process loads the challenger
    while (
        httpx.get(f"http://127.0.0.1:{rest}/v1/models/shadow_1p").json()["shadow"].get("process")
        != "ready"
    ):
        if time.monotonic() > deadline:
            raise SystemExit("shadow_1p's worker process did not get ready")
        time.sleep(0.5)
    seconds = args.seconds / args.rounds
    loads: dict[str, dict[str, Any]] = {"rest": {}}
    for name in MODELS:
        path = f"/v1/models/{name}:predict"
        loads["rest"][name] = lambda c, path=path: rest_load(
            "127.0.0.1", rest, path, body, c, seconds
        )
    if args.grpc:
        loads["grpc"] = {}
        target = f"127.0.0.1:{grpc_port}"
        for name in MODELS:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = name
            request.inputs["image"].CopyFrom(tf.make_tensor_proto(one))
            loads["grpc"][name] = lambda c, r=request: grpc_load(target, r, c, seconds)
    results: dict[str, dict[str, list[LoadResult]]] = {
        protocol: {name: [] for name in MODELS} for protocol in loads
    }
    counts: dict[str, dict[str, list[dict[str, float]]]] = {
        protocol: {name: [] for name in COUNTED} for protocol in loads
    }
    for level in args.concurrency:
        rounds = {p: {name: [] for name in MODELS} for p in loads}
        deltas = {p: {name: {} for name in COUNTED} for p in loads}
        for _ in range(args.rounds):
            for protocol, by_model in loads.items():
                for name, load in by_model.items():
                    print(f"  {protocol} {name}", flush=True)
                    before = counters(rest, requests=True) if name in COUNTED else {}
                    rounds[protocol][name] += run_loads(load, [level])
                    if name in COUNTED:
                        settle(rest, name)
                        for key, value in counters(rest, requests=True).items():
                            change = value - before.get(key, 0.0)
                            if f'model="{name}"' in key and change:
                                short = counter_name(key)
                                got = deltas[protocol][name]
                                got[short] = got.get(short, 0.0) + change
        for protocol in loads:
            for name in MODELS:
                results[protocol][name].append(median_of(rounds[protocol][name]))
            for name in COUNTED:
                counts[protocol][name].append(deltas[protocol][name])
    return results, counts


COUNTED = ("log_1", *SHADOWS)  # the server's counts per load: records logged and dropped, skips


def counter_name(key: str) -> str:
    """`shadow_skipped_total{model="m",reason="busy"}` -> `shadow_skipped_total{reason="busy"}`."""
    family, _, labels = key.partition("{")
    rest = [
        part for part in labels.rstrip("}").split(",") if part and not part.startswith("model=")
    ]
    return family + ("{" + ",".join(rest) + "}" if rest else "")


def settle(rest: int, name: str, timeout: float = 30.0) -> None:
    """Wait until the server's writer has answered for the load's records (its logged and
    dropped counts stop changing), so a load's counts are its own."""
    last, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = {k: v for k, v in counters(rest).items() if f'model="{name}"' in k}
        if now == last:
            return
        last = now
        time.sleep(0.3)


def counters(rest: int, requests: bool = False) -> dict[str, float]:
    """The server's own counts: records logged and dropped, shadow calls and skips (and with
    `requests`, the requests it answered)."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{rest}/monitoring/prometheus/metrics").text
    totals: dict[str, float] = {}
    for line in text.splitlines():
        for family in (
            "kerasops_serving_prediction_logs_total",
            "kerasops_serving_prediction_logs_dropped_total",
            "kerasops_serving_shadow_requests_total",
            "kerasops_serving_shadow_skipped_total",
            *(["kerasops_serving_requests_total"] if requests else []),
        ):
            if line.startswith(family + "{"):
                key = line.split(" ")[0].removeprefix("kerasops_serving_")
                totals[key] = float(line.split()[-1])
    return totals


def report(results: dict[str, Any], command: str) -> str:
    lines = [
        "## Serving: the cost of prediction logging and shadow traffic",
        "",
        f"Measured {results['when']} on this machine ({results['machine']}); "
        f"model: {results['model']}.",
        "",
        "```",
        command,
        "```",
        "",
        "One embedded server serves six copies of the model: `plain` (no logging_config), "
        "`log_0` / `log_0.1` / `log_1` (a logging_config at sampling 0, 0.1, 1.0), "
        "`shadow_1` (every request mirrored to a second version, both answers logged) and "
        "`shadow_1p` (the same, the second version answering in its own process at the "
        "lowest CPU priority, `process: true`). Prediction logs are written by the server's "
        "writer process. Closed "
        f"loop, single-example requests, {results['seconds']} s per point split into "
        f"{results['rounds']} interleaved round(s) (medians); the load generator and the "
        "server share the machine's CPUs.",
        "",
    ]
    for protocol, by_model in results["loads"].items():
        lines += [
            f"| {protocol} | concurrency | requests/s | p50 ms | p99 ms | errors |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, rows in by_model.items():
            for row in rows:
                lines.append(
                    f"| {name} | {row['concurrency']} | {row['rps']:.0f} | "
                    f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['errors']} |"
                )
        counted = results.get("counts", {}).get(protocol, {})
        lines += ["", *_ratios(protocol, by_model, counted), ""]
    counts = ", ".join(f"`{k}` {v:.0f}" for k, v in sorted(results["counters"].items()))
    lines += [
        "`log_0` does what `plain` does but for one early return (sampling 0 logs nothing), "
        "so the spread of `log_0 ÷ plain` around 1.00 is mostly this run's noise; read the "
        "other ratios against it. "
        "A mirrored request of `shadow_1` runs a second inference on the same CPUs and GIL as "
        "the primary; `shadow_1p`'s runs in another process that gets only the CPU left idle. "
        "Shadow calls drawn while another client request is answered are skipped as busy "
        "(the calls rows). The records rows count, per load, what the server's counters say "
        "was written and dropped against the requests the server answered.",
        "",
        f"Server counters at the end: {counts}.",
        "",
        f"Load average (1/5/15 min) {'/'.join(f'{v:.1f}' for v in results['load_start'])} at "
        f"the start, {'/'.join(f'{v:.1f}' for v in results['load_end'])} at the end.",
        "",
    ]
    return "\n".join(lines)


def _ratios(
    protocol: str, by_model: dict[str, list[dict]], counted: dict[str, list[dict]] | None = None
) -> list[str]:
    levels = [row["concurrency"] for row in by_model["plain"]]
    lines = [
        f"| {protocol} ratio | " + " | ".join(f"c={c}" for c in levels) + " | target |",
        "|---|" + "---:|" * len(levels) + "---|",
    ]

    def add(label: str, top: str, bottom: str, key: str, target: str) -> None:
        cells = [
            f"{t[key] / b[key]:.2f}" for t, b in zip(by_model[top], by_model[bottom], strict=True)
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")

    add("requests/s, log_1 ÷ log_0", "log_1", "log_0", "rps", "≥ 0.90")
    add("requests/s, log_0.1 ÷ log_0", "log_0.1", "log_0", "rps", "")
    add("requests/s, log_0 ÷ plain", "log_0", "plain", "rps", "")
    add("client p50, shadow_1 ÷ plain", "shadow_1", "plain", "p50_ms", "≤ 1.10")
    add("requests/s, shadow_1 ÷ plain", "shadow_1", "plain", "rps", "")
    add("client p50, shadow_1p ÷ plain (own process)", "shadow_1p", "plain", "p50_ms", "≤ 1.10")
    add("requests/s, shadow_1p ÷ plain", "shadow_1p", "plain", "rps", "")
    counted = counted or {}
    if counted.get("log_1"):
        cells = []
        for got in counted["log_1"]:
            dropped = sum(v for k, v in got.items() if k.startswith("prediction_logs_dropped"))
            logged = got.get("prediction_logs_total", 0.0)
            served = sum(v for k, v in got.items() if k.startswith("requests_total"))
            cells.append(f"{logged:.0f} / {served:.0f} ({dropped:.0f} dropped)")
        lines.append("| log_1 records logged / requests served | " + " | ".join(cells) + " | all |")
    for name in SHADOWS:
        if not counted.get(name):
            continue
        cells = []
        for got in counted[name]:
            answered = got.get('shadow_requests_total{outcome="answered"}', 0.0)
            busy = got.get('shadow_skipped_total{reason="busy"}', 0.0)
            cells.append(f"{answered:.0f} mirrored, {busy:.0f} skipped busy")
        lines.append(f"| {name} calls | " + " | ".join(cells) + " |  |")
    return lines


def write_results(markdown: str, target: Path) -> None:
    """Replace (or append) this benchmark's own section of `target`."""
    write_section(target, SECTION, markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="artifacts/runs/cnn-digits")
    parser.add_argument("--stand-in", action="store_true", help="untrained stand-in CNN")
    parser.add_argument("--prepared-root", default="data/prepared")
    parser.add_argument("--seconds", type=float, default=4.0, help="per point (all rounds)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--grpc",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gRPC loads beside REST (the default; --no-grpc halves the time)",
    )
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 64]
    )
    parser.add_argument(
        "--output",
        default=str(ROOT / "artifacts" / "benchmarks" / "serving-loop"),
        help="folder for RESULTS.md and results.json (default: untracked, under artifacts/)",
    )
    parser.add_argument(
        "--update-results",
        action="store_true",
        help="write benchmarks/serving/loop_results.json and its section of benchmarks/RESULTS.md",
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    load_start = os.getloadavg()
    model, images, description = load_model(args)
    want = np.asarray(model(images, training=False))
    workdir = Path(tempfile.mkdtemp(prefix="serving-loop-bench-"))
    try:
        repository = export_models(model, images, workdir)
        process, rest, grpc_port = serve(workdir, repository)
        try:
            loads, counts = measure(rest, grpc_port, images, want, args)
            totals = counters(rest)
        finally:
            stop(process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "model": description,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "loads": {
            protocol: {name: [r.row() for r in rows] for name, rows in by_model.items()}
            for protocol, by_model in loads.items()
        },
        "counters": totals,
        "counts": counts,
        "load_start": load_start,
        "load_end": os.getloadavg(),
    }
    publish(results, report(results, command_line()), output_paths(args), SECTION)


def output_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """(results.json, RESULTS.md): the tracked ones only with --update-results."""
    return run.output_paths(args, HERE / "loop_results.json")


if __name__ == "__main__":
    main()
