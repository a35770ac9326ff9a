"""DVC in temporary git repositories: data versions, `dvc repro` of the project's dvc.yaml,
re-running only what a param change touches, corrupted data, and failed stages not recorded."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kerasops.config import load_yaml
from kerasops.pipelines.cli import main
from kerasops.pipelines.tracking.lineage import dvc_hash

ROOT = Path(__file__).resolve().parents[1]
IDENTITY = {
    "GIT_AUTHOR_NAME": "kerasops tests",
    "GIT_AUTHOR_EMAIL": "tests@kerasops.invalid",
    "GIT_COMMITTER_NAME": "kerasops tests",
    "GIT_COMMITTER_EMAIL": "tests@kerasops.invalid",
}


def environment(repo: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(IDENTITY)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(repo)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def run(repo: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command, cwd=repo, env=environment(repo), capture_output=True, text=True, timeout=900
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(repo, sys.executable, "-m", "dvc", *args, check=check)


def git(repo: Path, *args: str) -> str:
    return run(repo, "git", *args).stdout


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def new_repo(path: Path, pipeline: dict, train: dict | None = None) -> Path:
    """A git repository holding the project's code, dvc.yaml, .dvc/ and a tiny params.yaml."""
    path.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "raw", "prepared", "reference")
    for folder in ("kerasops", "models", "pipelines", "data", "serving"):
        shutil.copytree(ROOT / folder, path / folder, ignore=ignore)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore",
                 ".dvc/plots/index.html"):  # fmt: skip
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, path / name)
    params = load_yaml((ROOT / "params.yaml").read_text())
    params["tracking"] = {"experiment": "tests", "tracking_uri": ""}
    params["train"] = {**params["train"], **(train or {})}
    params["pipeline"] = {**params["pipeline"], **pipeline}
    params["models"]["mlp"] = {"preset": "mlp_small", "dropout": 0.1, "train": {"epochs": 1}}
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(path, "init", "-q")
    git(path, "config", "user.name", IDENTITY["GIT_AUTHOR_NAME"])
    git(path, "config", "user.email", IDENTITY["GIT_AUTHOR_EMAIL"])
    git(path, "add", "-A")
    git(path, "commit", "-qm", "project")
    return path


@pytest.mark.slow
def test_data_add_versions_a_dataset_and_checkout_brings_the_old_bytes_back(tmp_path, capsys):
    repo = new_repo(tmp_path / "repo", {"datasets": [], "runs": {}, "fine_tunes": {}})
    params = str(repo / "params.yaml")
    remote = tmp_path / "remote"
    assert main(["--params", params, "data", "setup", "--remote", str(remote)]) == 0
    first, second = tmp_path / "v1" / "reviews.csv", tmp_path / "v2" / "reviews.csv"
    first.parent.mkdir(), second.parent.mkdir()
    first.write_text("text,label\ngreat film,pos\nawful,neg\n")
    second.write_text("text,label\ngreat film,pos\nawful,neg\nso so,neg\n")

    hashes = []
    for version in (first, second):
        capsys.readouterr()
        assert main(["--params", params, "data", "add", str(version), "--name", "reviews"]) == 0
        hashes.append(re.search(r"version (\S+)", capsys.readouterr().out).group(1))
        assert hashes[-1] == dvc_hash(repo / "data" / "raw" / "reviews")  # computed the DVC way
        git(repo, "commit", "-qm", f"reviews {len(hashes)}")
    assert hashes[0] != hashes[1] and hashes[0].endswith(".dir")

    git(repo, "checkout", "HEAD~1", "--", "data/raw/reviews.dvc")
    dvc(repo, "checkout", "data/raw/reviews.dvc")
    restored = repo / "data" / "raw" / "reviews" / "reviews.csv"
    assert restored.read_bytes() == first.read_bytes()

    shutil.rmtree(repo / ".dvc" / "cache")  # the local remote alone brings it back, offline
    shutil.rmtree(repo / "data" / "raw" / "reviews")
    dvc(repo, "pull", "data/raw/reviews.dvc")
    assert restored.read_bytes() == first.read_bytes()

    missing = tmp_path / "nowhere.csv"
    assert main(["--params", params, "data", "add", str(missing), "--name", "reviews"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {missing} does not exist; pass the file or folder holding the dataset"]


def fresh_copy(path: Path) -> Path:
    """The working tree's tracked files (what a clone holds) in a new git repository."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for relative in filter(None, listed.split("\0")):
        source = ROOT / relative
        if source.is_file():
            (path / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, path / relative)
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "fresh clone")
    return path


@pytest.mark.slow
def test_the_shipped_pipeline_is_valid_in_a_fresh_clone(tmp_path):
    """`dvc repro --dry` and `dvc status` on the shipped dvc.yaml and params.yaml, and every
    params.yaml key a stage declares present (DVC itself checks them only when a stage runs).

    DVC 3.67's `repro --dry` stops at the first stage whose dependency an earlier stage has
    not produced yet (treeverse/dvc#9021); `--force` skips the run-cache lookup that hashes
    those dependencies, so every stage's command is printed.
    """
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    repo = fresh_copy(tmp_path / "fresh")
    stages = dvc(repo, "stage", "list", "--name-only").stdout.split()
    dry = dvc(repo, "repro", "--dry", "--force")
    assert stages_run(dry.stdout) == set(stages)
    assert {"prepare@detection_digits", "export@cnn-digits"} <= set(stages)
    assert {"prepare@segmentation_digits", "train@segmenter-segmentation_digits"} <= set(stages)
    assert {"prepare@speech_commands", "train@keyword_spotter-speech_commands"} <= set(stages)
    dvc(repo, "status")
    shown = dvc(repo, "metrics", "show")
    assert "failed" not in (shown.stdout + shown.stderr).lower()  # nothing trained: nothing shown
    with Repo(str(repo)) as project:
        for stage in project.index.stages:
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    dep.get_hash()  # raises MissingParamsError naming a missing key


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory):
    """The project's pipeline reproduced once on digits with two small models."""
    repo = new_repo(
        tmp_path_factory.mktemp("dvc") / "repo",
        {
            "datasets": ["digits"],
            "runs": {
                "mlp-digits": {"model": "mlp", "dataset": "digits"},
                "cnn-digits": {"model": "cnn", "dataset": "digits"},
            },
            "fine_tunes": {},
        },
        train={"epochs": 1},
    )
    params = load_yaml((repo / "params.yaml").read_text())
    params["models"]["cnn"] = {"preset": "cnn_small", "filters": [8], "dense_units": 16}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    remote = repo.parent / "remote"
    run(repo, "kerasops", "data", "setup", "--remote", str(remote))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "data")
    first = dvc(repo, "repro")
    second = dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "reproduced")
    return repo, first.stdout, second.stdout


@pytest.mark.slow
def test_repro_runs_every_stage_once(pipeline_repo):
    repo, first, second = pipeline_repo
    assert stages_run(first) == {
        "prepare@digits",
        "validate@digits",
        "train@mlp-digits",
        "train@cnn-digits",
        "evaluate@mlp-digits",
        "evaluate@cnn-digits",
        "export@mlp-digits",
        "export@cnn-digits",
    }
    assert stages_run(second) == set() and "Data and pipelines are up to date" in second
    metrics = yaml.safe_load(dvc(repo, "metrics", "show", "--json").stdout)
    files = metrics[""]["data"]  # "" is the workspace
    scores = files["artifacts/metrics/cnn-digits.json"]["data"]
    assert 0.0 <= scores["test_accuracy"] <= 1.0 and "baseline_majority_accuracy" in scores
    assert files["artifacts/validation/digits.json"]["data"]["passed"] is True
    curve = (repo / "artifacts" / "plots" / "curves" / "cnn-digits.csv").read_text().splitlines()
    assert curve[0].startswith("epoch,") and "val_loss" in curve[0] and len(curve) == 2
    assert curve[1].startswith("1,")  # epochs count from 1, as Keras prints them


@pytest.mark.slow  # its fixture runs dvc repro, training two models
def test_plots_render_offline_with_the_confusion_matrix(pipeline_repo):
    repo, _, _ = pipeline_repo
    shown = dvc(repo, "plots", "show", "-o", "offline-plots")
    assert "failed" not in (shown.stdout + shown.stderr).lower()
    page = (repo / "offline-plots" / "index.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=", page)  # every script inline: no CDN
    assert "vega-embed 6.18.2" in page
    assert page.count("vegaEmbed(") >= 4  # two learning curves, two confusion matrices
    assert "plots/confusion/cnn-digits.csv" in page and "plots/curves/mlp-digits.csv" in page


@pytest.mark.slow
def test_train_stage_runs_carry_lineage(pipeline_repo):
    repo, _, _ = pipeline_repo
    import mlflow

    from kerasops.pipelines.config import load_params
    from kerasops.pipelines.tracking import store as tracking

    params = load_params(repo / "params.yaml")
    tracking.configure(params)
    runs = mlflow.search_runs(experiment_names=["tests"], output_format="list")
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    prepared = lock["stages"]["prepare@digits"]["outs"][0]["md5"]
    assert {r.data.tags["model"] for r in runs} == {"mlp", "cnn"}
    for found in runs:
        tags = found.data.tags
        assert tags["dvc.prepared.digits"] == prepared
        assert tags["dvc.prepared.digits.recorded"] == f"{prepared} (dvc.lock)"
        assert tags["dvc.raw.digits"].endswith("(data/raw/digits.dvc)")
        assert re.fullmatch(r"[0-9a-f]{40}", tags["git.commit"]) and tags["params_hash"]


@pytest.mark.slow
def test_a_changed_param_reruns_only_its_stages_as_an_experiment(pipeline_repo):
    repo, _, _ = pipeline_repo
    done = dvc(repo, "exp", "run", "--set-param", "models.mlp.dropout=0.25")
    assert stages_run(done.stdout) == {
        "train@mlp-digits",
        "evaluate@mlp-digits",
        "export@mlp-digits",
    }
    assert load_yaml((repo / "params.yaml").read_text())["models"]["mlp"]["dropout"] == 0.25
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout


@pytest.mark.slow
def test_corrupted_data_is_detected_and_dvc_restores_it(pipeline_repo, capsys):
    repo, _, _ = pipeline_repo
    params = str(repo / "params.yaml")
    target = repo / "data" / "prepared" / "digits" / "train-00000.tfrecord"
    original = target.read_bytes()
    target.write_bytes(original[:-64] + bytes(64))
    try:
        assert main(["--params", params, "data", "verify"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "data/prepared/digits has hash" in err[0]
        assert "train-00000.tfrecord no longer matches its manifest hash" in err[0]
        assert main(["--params", params, "validate", "digits"]) == 2
        assert "no longer matches its manifest hash" in capsys.readouterr().err
    finally:
        dvc(repo, "checkout", "--force", "data/prepared/digits")
    assert target.read_bytes() == original
    assert main(["--params", params, "data", "verify"]) == 0


@pytest.mark.slow
def test_failing_stages_are_not_recorded_as_done(pipeline_repo):
    repo, _, _ = pipeline_repo
    lock_before = (repo / "dvc.lock").read_text()
    verdict = repo / "artifacts" / "validation" / "digits.json"
    verdict_before = verdict.read_text()
    params_text = (repo / "params.yaml").read_text()
    misspelled = params_text.replace("max_leakage_fraction: 0.0", "max_leakage_fraktion: 0.0", 1)
    assert misspelled != params_text
    (repo / "params.yaml").write_text(misspelled)
    try:
        failed = dvc(repo, "repro", "--force", "--single-item", "validate@digits", check=False)
    finally:
        (repo / "params.yaml").write_text(params_text)
    assert failed.returncode != 0
    assert "unknown key pipeline.validation.max_leakage_fraktion" in failed.stderr + failed.stdout
    assert (repo / "dvc.lock").read_text() == lock_before
    assert verdict.read_text() == verdict_before  # a persisted output: DVC does not delete it

    dvc_yaml = (repo / "dvc.yaml").read_text()
    (repo / "dvc.yaml").write_text(
        dvc_yaml.replace("cmd: kerasops evaluate", "cmdd: kerasops evaluate")
    )
    try:
        broken = dvc(repo, "repro", check=False)
    finally:
        (repo / "dvc.yaml").write_text(dvc_yaml)
    assert broken.returncode != 0 and "cmdd" in broken.stderr + broken.stdout
    assert (repo / "dvc.lock").read_text() == lock_before


TUNE_STAGES = ("tune@mlp-digits", "train@mlp-digits", "evaluate@mlp-digits", "export@mlp-digits")


@pytest.mark.slow
def test_a_study_runs_as_an_experiment_then_trains_with_its_best_values(pipeline_repo):
    """README "Tuning": one `dvc exp run` adds a pipeline.tunes entry; `tune@mlp-digits` runs a
    study and writes its best values into models.mlp, then the run trains with them."""
    repo, _, _ = pipeline_repo
    params = load_yaml((repo / "params.yaml").read_text())
    space = {
        "dropout": {"type": "float", "low": 0.0, "high": 0.3},
        "train.learning_rate": {"type": "log_float", "low": 1.0e-3, "high": 1.0e-2},
    }
    tuning = {"objective": "val_accuracy", "direction": "maximize", "trials": 2, "space": space}
    params["tuning"]["mlp"] = tuning
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "commit", "-qam", "tuning.mlp")
    entry = "+pipeline.tunes.mlp-digits={model: mlp, dataset: digits}"
    done = dvc(repo, "exp", "run", "-n", "mlp-tuned", "-S", entry, *TUNE_STAGES)
    assert stages_run(done.stdout) == set(TUNE_STAGES)
    ran = done.stdout.index
    assert ran("Running stage 'tune@mlp-digits'") < ran("Running stage 'train@mlp-digits'")
    summary = json.loads((repo / "artifacts/metrics/tuning/mlp-digits.json").read_text())
    assert summary["trials_complete"] == 2 and summary["study"].startswith("mlp-digits-")
    applied = load_yaml((repo / "params.yaml").read_text())["models"]["mlp"]
    assert applied["dropout"] == summary["best"]["model.dropout"]
    assert applied["train"]["learning_rate"] == summary["best"]["train.learning_rate"]
    trained = json.loads((repo / "artifacts/runs/mlp-digits/config.json").read_text())
    assert trained["model_config"]["dropout"] == applied["dropout"]
    assert trained["train"]["learning_rate"] == applied["train"]["learning_rate"]
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout
    shown = dvc(repo, "exp", "show", "--csv").stdout
    assert "mlp-tuned" in shown and "best_val_accuracy" in shown.splitlines()[0]
