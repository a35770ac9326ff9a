"""Data versions with DVC: set a repository up, version a user's dataset, verify tracked data.

DVC runs as its own command (`python -m dvc`, the interpreter kerasops runs in), in the folder of
params.yaml, which must be inside a git repository. The default remote is a local folder
(`~/.cache/kerasops/dvc-remote`, or `KERASOPS_DVC_REMOTE`), written to `.dvc/config.local` so
that each clone chooses its own; `dvc remote add -d` points a project at S3-compatible storage.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from kerasops.data.errors import DataError
from kerasops.data.prepare import check_dataset_name
from kerasops.data.prepared import load_prepared
from kerasops.data.sources import BUILTIN_SOURCES, load_source
from kerasops.errors import KerasopsError
from kerasops.pipelines.config import Params
from kerasops.pipelines.tracking.lineage import dvc_hash, git, recorded_hash


def default_remote() -> Path:
    folder = os.environ.get("KERASOPS_DVC_REMOTE") or "~/.cache/kerasops/dvc-remote"
    return Path(folder).expanduser()


def dvc(root: Path, *args: str) -> str:
    """Run `dvc ARGS` in `root`; raise KerasopsError with DVC's own error line when it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True
    )
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:]
        raise KerasopsError(f"`dvc {' '.join(args)}` failed: {' '.join(errors) or 'no output'}")
    return done.stdout


def require_git(root: Path) -> Path:
    """The top of the git repository holding `root`; raise when there is none."""
    top = git(root, "rev-parse", "--show-toplevel")
    if not top:
        raise KerasopsError(f"{root} is not inside a git repository; run `git init` there first")
    return Path(top)


def setup_dvc(params: Params, remote: str | None = None) -> list[str]:
    """Initialise DVC when missing, add a default remote when none, track built-in raw data.

    Returns what was done, one line per action.
    """
    root = Path(params.root)
    require_git(root)
    done = []
    if not (root / ".dvc").is_dir():
        dvc(root, "init", "--subdir") if root != require_git(root) else dvc(root, "init")
        done.append("initialised DVC (.dvc/): commit it with git")
    if remote or not dvc(root, "remote", "list").strip():
        url = remote or str(default_remote())
        if "://" not in url:
            Path(url).mkdir(parents=True, exist_ok=True)
        dvc(root, "remote", "add", "--local", "--default", "--force", "local", url)
        done.append(f"default DVC remote 'local': {url} (.dvc/config.local)")
    for name in params.pipeline.datasets:
        config = params.dataset(name)
        if config.source in BUILTIN_SOURCES:
            load_source(config, params.path("raw_data"), name)  # writes data/raw/<name>/
        if (params.path("raw_data") / name).exists():
            version = track(params, params.path("raw_data") / name, push=False)
            done.append(f"raw data {name}: DVC version {version}")
    return done


def track(params: Params, target: Path, push: bool = True) -> str:
    """`dvc add` target, stage its .dvc file in git, push to the default remote; return its hash."""
    root = Path(params.root)
    if not (root / ".dvc").is_dir():
        raise KerasopsError("DVC is not set up here; run `kerasops data setup` first")
    relative = os.path.relpath(target, root)
    dvc(root, "add", relative)
    dvc_file = target.with_name(target.name + ".dvc")
    staged = [dvc_file] + [p for p in [target.parent / ".gitignore"] if p.is_file()]
    if git(root, "add", *(os.path.relpath(p, root) for p in staged)) is None:
        raise KerasopsError(f"`git add {os.path.relpath(dvc_file, root)}` failed; is it ignored?")
    if push and dvc(root, "remote", "list").strip():
        dvc(root, "push", os.path.relpath(dvc_file, root))
    recorded = recorded_hash(root, target)
    return recorded[0] if recorded else dvc_hash(target)


def add_dataset(params: Params, source: Path, name: str, push: bool = True) -> tuple[str, Path]:
    """Copy a user's file or folder to `data/raw/<name>/` and version it; return (hash, folder).

    The previous version stays in the DVC cache (and remote), reachable by its .dvc file in git.
    """
    check_dataset_name(name)
    source = Path(source).resolve()
    if not source.exists():
        raise DataError(f"{source} does not exist; pass the file or folder holding the dataset")
    target = params.path("raw_data") / name
    if source != target.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
        try:
            if source.is_dir():
                shutil.copytree(source, staging / name)
            else:
                (staging / name).mkdir()
                shutil.copy2(source, staging / name / source.name)
            old = staging / "old"
            if target.exists():
                target.rename(old)
            (staging / name).rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return track(params, target, push=push), target


def verify_data(params: Params, names: Iterable[str]) -> list[str]:
    """Check raw and prepared data of `names` against their DVC records and manifests.

    Returns one line per check; raises DataError naming every mismatch.
    """
    root, problems, lines = Path(params.root), [], []
    for name in names:
        for kind in ("raw_data", "prepared_data"):
            folder = params.path(kind) / name
            recorded = recorded_hash(root, folder)
            if recorded is None or not folder.exists():
                state = "not tracked by DVC" if folder.exists() else "absent"
                lines.append(f"{name} {kind}: {state}")
                continue
            actual = dvc_hash(folder)
            if actual != recorded[0]:
                problems.append(
                    f"{os.path.relpath(folder, root)} has hash {actual}, {recorded[1]} "
                    f"records {recorded[0]}"
                )
            lines.append(f"{name} {kind}: {actual} ({recorded[1]})")
        if (params.path("prepared_data") / name / "manifest.json").is_file():
            try:
                load_prepared(name, params.path("prepared_data"))
            except DataError as exc:
                problems.append(str(exc))
    if problems:
        raise DataError(
            "data does not match its recorded version: "
            + "; ".join(problems)
            + " (restore it with `dvc checkout`, or re-run `dvc repro`)"
        )
    return lines
