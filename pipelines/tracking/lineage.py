"""Lineage: the code, data and params a run read, as MLflow tags, and the chain back from a run.

A dataset version is its DVC hash: the md5 of the prepared folder computed the way DVC computes
a directory's hash (`<md5 of the sorted JSON listing>.dir`), so it equals the hash in `dvc.lock`
or a `.dvc` file when the folder is tracked and unchanged. Where DVC recorded another hash, the
tag `dvc.prepared.<name>.recorded` says so: the run read a version DVC does not know.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

import yaml

from kerasops.errors import KerasopsError
from kerasops.pipelines.config import Params

CHUNK = 1 << 20


def md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def dvc_hash(path: Path) -> str:
    """The DVC 3 hash of a file (its md5) or a folder (`<md5 of its listing>.dir`)."""
    path = Path(path)
    if path.is_file():
        return md5_file(path)
    if not path.is_dir():
        raise KerasopsError(f"{path} does not exist; nothing to hash")
    entries = sorted(
        (
            {"md5": md5_file(file), "relpath": file.relative_to(path).as_posix()}
            for file in path.rglob("*")
            if file.is_file()
        ),
        key=lambda entry: entry["relpath"],
    )
    listing = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(listing).hexdigest() + ".dir"


def lock_outs(lock: dict) -> list[dict]:
    """Every out of every stage in a parsed dvc.lock."""
    return [o for stage in lock.get("stages", {}).values() for o in stage.get("outs", [])]


def recorded_hash(root: Path, target: Path) -> tuple[str, str] | None:
    """(hash, where) DVC recorded for `target`: its `.dvc` file or an out in `dvc.lock`."""
    root, target = Path(root).resolve(), Path(target).resolve()
    dvc_file = target.with_name(target.name + ".dvc")
    relative = os.path.relpath(target, root)
    sources = [(dvc_file, lambda d: d.get("outs", [])), (root / "dvc.lock", lock_outs)]
    for file, outs_of in sources:
        if not file.is_file():
            continue
        data = yaml.safe_load(file.read_text()) or {}
        base = file.parent
        for out in outs_of(data) if isinstance(data, dict) else []:
            if os.path.normpath(os.path.relpath(base / out["path"], root)) == relative:
                return out.get("md5", ""), os.path.relpath(file, root)
    return None


def dataset_version(params: Params, dataset: str) -> str:
    """The DVC hash of the prepared version of `dataset` in the workspace."""
    folder = params.path("prepared_data") / dataset
    if not (folder / "manifest.json").is_file():
        raise KerasopsError(
            f"dataset {dataset!r} is not prepared; run `kerasops prepare {dataset}`"
        )
    return dvc_hash(folder)


def git(root: Path, *args: str) -> str | None:
    """Output of a git command in `root`, or None outside a repository / without git."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def code_version(root: Path) -> dict[str, str]:
    """The git commit of `root` and whether tracked files differ from it."""
    commit = git(root, "rev-parse", "HEAD")
    if commit is None:
        return {"git.commit": "none (not a git repository)", "git.dirty": "unknown"}
    status = git(root, "status", "--porcelain", "--untracked-files=no")
    return {"git.commit": commit, "git.dirty": str(bool(status)).lower()}


def lineage_tags(params: Params, datasets: Iterable[str]) -> dict[str, str]:
    """Git commit and dirty flag, and per dataset its prepared (and raw) DVC hashes."""
    root = Path(params.root)
    tags = code_version(root)
    for name in datasets:
        prepared = params.path("prepared_data") / name
        tags[f"dvc.prepared.{name}"] = dataset_version(params, name)
        recorded = recorded_hash(root, prepared)
        tags[f"dvc.prepared.{name}.recorded"] = (
            f"{recorded[0]} ({recorded[1]})" if recorded else "untracked"
        )
        raw = params.path("raw_data") / name
        recorded_raw = recorded_hash(root, raw)
        if recorded_raw:
            tags[f"dvc.raw.{name}"] = f"{recorded_raw[0]} ({recorded_raw[1]})"
    return tags
