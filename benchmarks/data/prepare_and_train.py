"""Preparation and training input at real sizes: generated photo folders streamed into shards.

For each `--counts` N, a folder of N generated 256x256 JPEG photos (kerasops.data.photos) is
prepared at `--image-size` (224x224 by default) on every core and, for the first N, on one
process too: wall time, images/s, peak RSS of the preparing process and of its largest worker,
prepared bytes / source bytes. Then a small CNN is trained for `--steps` steps from the shards
(`input_cache: auto`) and, on the first N only, also from the former in-memory arrays (every
image decoded into one float32 array, `from_tensor_slices`, cached, shuffled whole), streamed
with no cache, and streamed through an on-disk cache of the decoded split: peak RSS and
steps/s after a warm-up, the four kinds alternated `--rounds` times (medians). Each
measurement runs in a fresh process, so each peak RSS is its own.

    PYTHONPATH=. python benchmarks/data/prepare_and_train.py --counts 2000 10000 50000 \\
        [--update-results]

Results go to artifacts/benchmarks/data.json (untracked); `--update-results` also writes
benchmarks/data/results.json and the "data" section of benchmarks/RESULTS.md, with the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from benchmarks.sections import write_section  # noqa: E402  (a script: the repository root first)


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def run_prepare(photos: Path, prepared: Path, size: int, workers: int) -> dict:
    from kerasops.data import prepare_dataset

    config = {"source": "image_folder", "path": str(photos), "image_size": [size, size]}
    start = time.perf_counter()
    manifest = prepare_dataset("photos", config, photos.parent, prepared, workers=workers)
    wall = time.perf_counter() - start
    count = sum(manifest.splits.values())
    return {
        "wall_s": round(wall, 2),
        "images_per_s": round(count / wall, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "worker_peak_rss_mb": round(peak_rss_mb(resource.RUSAGE_CHILDREN), 1),
        "shards": sum(len(s) for s in manifest.shards.values()),
        "prepared_bytes": folder_bytes(prepared / "photos"),
    }


def build_cnn(size: int):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=4, activation="relu")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def run_train(source: str, photos: Path, prepared: Path, size: int, steps: int, batch: int):
    from kerasops.data import load_prepared, make_tf_dataset
    from kerasops.data.pipeline import DEFAULT_CACHE_MB, cache_target, streamed_buffer_size
    from kerasops.data.prepared import Split

    # streamed: never cached; disk: decoded once into an on-disk cache (`input_cache: <path>`)
    input_cache = {"streamed": "none", "disk": str(prepared.parent / "train-cache")}.get(
        source, "auto"
    )
    if source == "disk":
        for stale in prepared.parent.glob("train-cache*"):
            stale.unlink()
    if source in ("shards", "streamed", "disk"):
        split = load_prepared("photos", prepared).splits["train"]
        spec = split.shards
        cached = cache_target(input_cache, spec.decoded_bytes, DEFAULT_CACHE_MB) is not None
        buffer = min(spec.count, 10_000) if cached else streamed_buffer_size(spec, 10_000, 64)
    else:  # the former path: every image decoded into one float32 array
        from kerasops.data.readers import read_image_folder

        examples = read_image_folder(photos, (size, size), "rgb")
        classes = sorted(set(examples.labels.tolist()))
        labels = [classes.index(v) for v in examples.labels]
        import numpy as np

        split = Split(examples.x, np.asarray(labels, dtype="int32"))
        cached, buffer = True, len(split)
    dataset = make_tf_dataset(
        split,
        batch,
        True,
        0,
        cache=input_cache if source != "arrays" else True,
        shuffle_buffer=10_000 if source != "arrays" else len(split),
    )
    dataset = dataset.repeat()
    model = build_cnn(size)
    model.fit(dataset, epochs=1, steps_per_epoch=5, verbose=0)  # warm-up: tracing, first reads
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    wall = time.perf_counter() - start
    if source == "disk":
        for used in prepared.parent.glob("train-cache*"):
            used.unlink()
    return {
        "steps_per_s": round(steps / wall, 2),
        "images_per_s": round(steps * batch / wall, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "cached": cached,
        "cache": "disk" if source == "disk" else ("memory" if cached else "none"),
        "shuffle_buffer": buffer,
    }


def child(args: argparse.Namespace) -> None:
    photos, prepared = Path(args.photos), Path(args.prepared)
    start = time.perf_counter()
    import tensorflow  # noqa: F401  start-up is timed apart from the work

    imported = round(time.perf_counter() - start, 2)
    if args.child == "prepare":
        result = run_prepare(photos, prepared, args.image_size, args.workers)
    else:
        result = run_train(args.child, photos, prepared, args.image_size, args.steps, args.batch)
    print("RESULT " + json.dumps({**result, "tensorflow_import_s": imported}))


def in_child(kind: str, args: argparse.Namespace, photos: Path, prepared: Path, **extra) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--photos", str(photos)]
    command += ["--prepared", str(prepared), "--image-size", str(args.image_size)]
    command += ["--steps", str(args.steps), "--batch", str(args.batch)]
    command += [f"--{k}={v}" for k, v in extra.items()]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    (line,) = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    return json.loads(line[len("RESULT ") :])


def _generate_part(task: tuple[str, int, int]) -> None:
    from kerasops.data.photos import generate_photo_folder

    folder, first, count = task
    generate_photo_folder(Path(folder), count, size=256, seed=0, first=first)


def generate_in_parallel(photos: Path, count: int, part: int = 500) -> None:
    """The same folder `generate_photo_folder(photos, count)` writes, on every core."""
    import multiprocessing

    parts = [(str(photos), s, min(part, count - s)) for s in range(0, count, part)]
    with multiprocessing.get_context("fork").Pool() as pool:
        pool.map(_generate_part, parts)


def prepare_rounds(args: argparse.Namespace, photos: Path, scratch: Path) -> dict:
    """Preparation on every core and on one process, alternated `--rounds` times (side by side
    under the same load): each one's images/s, and the ratio of their medians."""
    rates: dict[str, list[float]] = {"all_cores": [], "one_process": []}
    loads = [os.getloadavg()]
    for _ in range(args.rounds):
        for key, workers in (("all_cores", os.cpu_count()), ("one_process", 1)):
            shutil.rmtree(scratch, ignore_errors=True)
            rates[key].append(in_child("prepare", args, photos, scratch, workers=workers)
                              ["images_per_s"])  # fmt: skip
            loads.append(os.getloadavg())
    shutil.rmtree(scratch, ignore_errors=True)
    medians = {k: statistics.median(v) for k, v in rates.items()}
    ratio = round(medians["all_cores"] / medians["one_process"], 2)
    return {**rates, "median": medians, "ratio": ratio, "loads": loads}


def mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def peak(row: dict) -> float:
    """A measurement's peak RSS: its process's, or its largest worker's where that is larger."""
    return max(row["peak_rss_mb"], row.get("worker_peak_rss_mb", 0.0))


def streamed(row: dict) -> dict:
    """A size's training from shards with nothing cached (its `auto` run where that streamed)."""
    return row.get("train_streamed", row["train_shards"])


def input_case(train: dict) -> str:
    if train.get("cache") == "disk":
        return f"cached on disk, buffer {train['shuffle_buffer']:,}"
    return "cached" if train["cached"] else f"streamed, buffer {train['shuffle_buffer']:,}"


TRAIN_KINDS = ("arrays", "shards", "streamed", "disk")  # alternated on the first size


def train_rounds(args: argparse.Namespace, photos: Path, prepared: Path) -> dict[str, dict]:
    """The first size's trainings, the kinds alternated `--rounds` times (side by side under
    the same load): each kind's last run, its steps/s replaced by the median of its rounds
    (every round's figure kept) and its peak RSS the largest of them."""
    runs: dict[str, list[dict]] = {kind: [] for kind in TRAIN_KINDS}
    loads = [os.getloadavg()]
    for _ in range(args.rounds):
        for kind in TRAIN_KINDS:
            runs[kind].append(in_child(kind, args, photos, prepared))
            loads.append(os.getloadavg())
    merged = {}
    for kind, results in runs.items():
        rates = [r["steps_per_s"] for r in results]
        merged[f"train_{kind}"] = {
            **results[-1],
            "steps_per_s": statistics.median(rates),
            "steps_per_s_rounds": rates,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        }
    merged["train_loads"] = loads
    return merged


def markdown(report: dict, command: str) -> str:
    """The RESULTS.md section: one row per photo count, then each target against its figure."""
    rows = report["results"]
    lines = [
        "## Data: preparation and training input at real sizes",
        "",
        f"`{command}` ({report['meta']['cores']} cores)",
        "",
        "Generated 256x256 JPEG photos (kerasops.data.photos) prepared at "
        f"{report['args']['image_size']}px into shards on",
        f"every core, then a small CNN trained for {report['args']['steps']} steps from the shards "
        "(and, on the first",
        "size, from the former in-memory float32 arrays). Each figure is from its own process.",
        "Training from shards uses `input_cache: auto`: a split whose decoded uint8 examples fit",
        "256 MiB is decoded once and cached (*cached*), a larger one streams through a shuffle",
        "buffer of min(N, 10,000 examples, 64 MiB of serialized examples) (*streamed*). On a",
        "first size that is cached, the same split is trained streamed too (`input_cache: none`),",
        "and the flat-RSS target compares streamed with streamed. The first size is also",
        "trained through an on-disk cache of the decoded split (`input_cache: <path>`, filled",
        "in the first epoch), and its four kinds alternate run by run (medians of the rounds).",
        "",
        "| photos | source | prepare s | images/s | prepare peak RSS | prepared ÷ source "
        "| train input | train steps/s | train peak RSS | load before → after |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for row in rows:
        prep = row["prepare"]
        load = f"{row['load_before'][0]:.1f} → {row['load_after'][0]:.1f}"
        kinds = ("train_shards", "train_streamed", "train_disk")
        trains = [row[k] for k in kinds if k in row]
        for i, train in enumerate(trains):
            head = (
                f"| {row['photos']:,} | {mb(row['source_bytes'])} | {prep['wall_s']} | "
                f"{prep['images_per_s']} | {peak(prep):,.0f} MB | {prep['bytes_ratio']} | "
                if i == 0
                else f"| {row['photos']:,} | | | | | | "
            )
            lines.append(
                f"{head}{input_case(train)} | {train['steps_per_s']} | {peak(train):,.0f} MB "
                f"| {load if i == 0 else ''} |"
            )
    first, last = rows[0], rows[-1]
    lines += ["", "| target | figure | met |", "|---|---|---|"]

    def target(name: str, figure: str, met: bool) -> None:
        lines.append(f"| {name} | {figure} | {'yes' if met else '**no**'} |")

    small, large = peak(first["prepare"]), peak(last["prepare"])
    figure = f"{large:,.0f} MB at {last['photos']:,} vs {small:,.0f} MB at {first['photos']:,}"
    target("prepare peak RSS flat in N (≤ 1.10×, < 2.5 GB)", f"{figure} ({large / small:.2f}×)",
           large <= 1.10 * small and large < 2500)  # fmt: skip
    small, large = peak(streamed(first)), peak(streamed(last))
    figure = f"{large:,.0f} MB at {last['photos']:,} vs {small:,.0f} MB at {first['photos']:,}"
    target("train peak RSS flat in N, streamed (≤ 1.10×, < 2.5 GB)",
           f"{figure} ({large / small:.2f}×)", large <= 1.10 * small and large < 2500)  # fmt: skip
    worst = max(r["prepare"]["bytes_ratio"] for r in rows)
    target("prepared bytes ≤ 1.5× source", f"{worst}× at most", worst <= 1.5)
    if "train_arrays" in first:
        arrays, shards = first["train_arrays"], first["train_shards"]
        ratio = shards["steps_per_s"] / arrays["steps_per_s"]
        figure = (
            f"{ratio:.2f}× ({shards['steps_per_s']} {input_case(shards)} vs "
            f"{arrays['steps_per_s']} steps/s; arrays peak RSS {arrays['peak_rss_mb']:,.0f} MB)"
        )
        target(f"shards step rate ≥ 0.95× in-memory ({first['photos']:,})", figure, ratio >= 0.95)
        if "train_streamed" in first:
            rate = first["train_streamed"]["steps_per_s"]
            ratio = rate / arrays["steps_per_s"]
            target(f"streamed step rate (no cache) ≥ 0.95× in-memory ({first['photos']:,})",
                   f"{ratio:.2f}× ({rate} vs {arrays['steps_per_s']} steps/s)",
                   ratio >= 0.95)  # fmt: skip
        if "train_disk" in first:
            rate = first["train_disk"]["steps_per_s"]
            ratio = rate / arrays["steps_per_s"]
            target(f"streamed, decoded once to an on-disk cache, ≥ 0.95× in-memory "
                   f"({first['photos']:,})", f"{ratio:.2f}× ({rate} vs {arrays['steps_per_s']} "
                   "steps/s)", ratio >= 0.95)  # fmt: skip
        if "train_loads" in first:
            rounds = "; ".join(
                f"{kind} {first[f'train_{kind}']['steps_per_s_rounds']}" for kind in TRAIN_KINDS
            )
            loads = ", ".join(f"{load[0]:.1f}" for load in first["train_loads"])
            lines.append(
                f"| (training steps/s are medians of {len(first['train_loads']) - 1} runs "
                f"alternated by kind: {rounds}; load {loads}) | | |"
            )
    if "prepare_rounds" in first:
        rounds = first["prepare_rounds"]
        median = rounds["median"]
        loads = ", ".join(f"{load[0]:.1f}" for load in rounds["loads"])
        figure = (
            f"{rounds['ratio']:.2f}× (medians {median['all_cores']} vs {median['one_process']} "
            f"images/s of {len(rounds['all_cores'])} alternated rounds: "
            f"{rounds['all_cores']} vs {rounds['one_process']}; load {loads})"
        )
        target(f"preparation on every core ≥ 1.6× one process ({first['photos']:,})", figure,
               rounds["ratio"] >= 1.6)  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--work", default="artifacts/benchmarks/data-work")
    parser.add_argument("--out", default="artifacts/benchmarks/data.json")
    parser.add_argument("--skip-single", action="store_true", help="no one-process preparation")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternated every-core/one-process preparations and first-size trainings",
    )
    parser.add_argument(
        "--update-results",
        action="store_true",
        help="write benchmarks/data/results.json and the data section of benchmarks/RESULTS.md",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--photos", help=argparse.SUPPRESS)
    parser.add_argument("--prepared", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    work, results = Path(args.work).resolve(), []  # sources read a relative path under their root
    for index, count in enumerate(args.counts):
        photos = work / f"photos-{count}" / "photos"
        if not photos.is_dir():
            generate_in_parallel(photos, count)
        source_bytes = folder_bytes(photos)
        prepared = work / f"prepared-{count}"
        shutil.rmtree(prepared, ignore_errors=True)
        row = {"photos": count, "source_bytes": source_bytes, "load_before": os.getloadavg()}
        row["prepare"] = in_child("prepare", args, photos, prepared, workers=os.cpu_count())
        row["prepare"]["bytes_ratio"] = round(row["prepare"]["prepared_bytes"] / source_bytes, 3)
        if index == 0 and not args.skip_single:
            row["prepare_rounds"] = prepare_rounds(args, photos, work / f"prepared-{count}-x")
        if index == 0:
            row.update(train_rounds(args, photos, prepared))
        else:
            row["train_shards"] = in_child("shards", args, photos, prepared)
        row["load_after"] = os.getloadavg()
        results.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    report = {"meta": meta, "args": vars(args), "results": results}
    out.write_text(json.dumps(report, indent=2))
    command = "python " + " ".join([f"benchmarks/data/{Path(__file__).name}", *sys.argv[1:]])
    text = markdown(report, command)
    print(text)
    if args.update_results:
        (HERE / "results.json").write_text(json.dumps(report, indent=2) + "\n")
        write_section(ROOT / "benchmarks" / "RESULTS.md", "data", text)


if __name__ == "__main__":
    main()
