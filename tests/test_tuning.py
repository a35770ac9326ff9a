"""Tuning: Optuna studies over `tuning.<family>.space`, trials as nested MLflow training runs,
strict inputs, failed and pruned trials, resuming a killed study, `--apply`, and the fan-out
of trials over two Dask worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback

from kerasops.config import load_yaml
from kerasops.errors import ConfigError
from kerasops.pipelines.cli import main
from kerasops.pipelines.config import load_params
from kerasops.pipelines.steps import tune
from kerasops.pipelines.tracking import store as tracking
from tests.conftest import write_params

pytestmark = pytest.mark.serial  # timed against other processes: run alone (Makefile)

SPACE = {
    "train.learning_rate": {"type": "log_float", "low": 1.0e-3, "high": 1.0e-2},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3},
    "hidden_units": {"type": "categorical", "choices": [[32], [64, 32]]},
}
FAST = ["--set", "epochs=1", "--set", "batch_size=128"]


def tuning_section(heartbeat_seconds: int = 1, **family) -> dict:
    return {
        "heartbeat_seconds": heartbeat_seconds,
        "mlp": {
            "objective": "val_accuracy",
            "direction": "maximize",
            "pruner": "median",
            "trials": 4,
            "space": SPACE,
            **family,
        },
    }


def write_tuned(project: Path, **changes) -> Path:
    """params.yaml with a commented `models:` section and `tuning` (`changes`: its
    `heartbeat_seconds` or keys of `tuning.mlp`)."""
    path = write_params(project, tuning=tuning_section(**changes))
    path.write_text(
        path.read_text() + "models:\n  mlp:  # the dense stack\n    preset: mlp_small\n"
    )
    return project


@pytest.fixture
def tuned(project):
    """A project whose params.yaml has a commented `models:` section and `tuning.mlp`."""
    return write_tuned(project)


def study_trials(project: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{project / 'artifacts' / 'optuna.db'}"
    with tune.study_lock(storage):  # while `kerasops tune` may be creating the storage's tables
        return optuna.load_study(study_name=name, storage=storage).get_trials()


def runs_of(project: Path, study: str) -> list:
    tracking.configure(load_params(project / "params.yaml"))
    return MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("tests").experiment_id],
        filter_string=f"tags.`{tune.STUDY_TAG}` = '{study}'",
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"space": {"units": {"type": "int", "low": 1, "high": 4}}}, "unknown key 'units'"),
        ({"space": {"dropout": {"type": "float", "low": 0.5, "high": 0.1}}}, "inverted range"),
        ({"space": {"dropout": {"type": "float", "low": 0.2, "high": 0.2}}}, "empty or inverted"),
        ({"space": {"dropout": {"type": "normal", "low": 0, "high": 1}}}, "unknown type"),
        ({"space": {"hidden_units": {"type": "categorical", "choices": []}}}, "non-empty"),
        ({"sampler": "grid"}, "unknown sampler 'grid'"),
        ({"pruner": "fast"}, "unknown pruner 'fast'"),
        ({"direction": "up"}, "unknown direction"),
        ({"objectiv": "val_loss"}, "unknown key tuning.mlp.objectiv"),
    ],
)
def test_bad_tuning_sections_are_refused_with_the_key(project, change, message):
    write_params(project, tuning={"mlp": {"space": SPACE, **change}})
    with pytest.raises(ConfigError, match=message):
        load_params(project / "params.yaml")


def test_bad_input_exits_2_with_one_line_and_stores_nothing(project, capsys):
    write_params(project, tuning={"mlp": {"space": SPACE, "sampler": "grid"}})
    assert main(["tune", "mlp", "--dataset", "digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "unknown sampler 'grid'" in err and "\n" not in err
    write_params(
        project, tuning={"mlp": {"space": {"filters": {"type": "int", "low": 1, "high": 2}}}}
    )
    assert main(["tune", "mlp", "--dataset", "digits"]) == 2
    assert "unknown key 'filters' for model mlp" in capsys.readouterr().err
    write_params(project, tuning={"nosuch": {"space": SPACE}})
    assert main(["tune", "mlp", "--dataset", "digits"]) == 2
    write_params(
        project, tuning={**tuning_section(), "storage": "postgresql://nobody@127.0.0.1:9/x"}
    )
    assert main(["tune", "mlp", "--dataset", "digits"]) == 2
    assert "cannot open tuning.storage" in capsys.readouterr().err
    write_params(project)  # no tuning section at all
    assert main(["tune", "mlp", "--dataset", "digits"]) == 2
    assert "add tuning.mlp.space" in capsys.readouterr().err
    assert not (project / "artifacts").exists()


def test_a_study_per_config_changes_with_the_space_or_base_config_only(project, capsys):
    """`--study-per-config` (the tune stage's): applied best values and `trials` keep the name,
    a changed space or a changed key the trials start from give a new study."""

    def name(models=None, overrides=(), **family) -> str:
        write_params(project, tuning=tuning_section(**family), models=models or {})
        return tune.config_study_name(load_params("params.yaml"), "mlp", "digits", overrides)

    first = name()
    assert first.startswith("mlp-digits-") and first == name()
    applied = {"mlp": {"dropout": 0.2, "train": {"learning_rate": 0.005}}}
    assert name(models=applied, trials=9) == first
    assert name(overrides=["epochs=2"]) != first
    assert name(models={"mlp": {"activation": "tanh"}}) != first
    assert name(space={**SPACE, "dropout": {"type": "float", "low": 0.0, "high": 0.4}}) != first
    assert main(["tune", "mlp", "--dataset", "digits", "--study", "a", "--study-per-config"]) == 2
    assert "pass one" in capsys.readouterr().err
    assert not (project / "artifacts").exists()


def test_a_trial_started_once_the_study_is_full_gives_way(project, monkeypatch, capsys):
    """Two processes that both saw one trial left each start one: the later-numbered one is
    marked surplus, never trained, and not counted, so the study holds exactly `--trials`."""
    write_params(project, tuning=tuning_section())
    params = load_params("params.yaml")
    url = tune.storage_url(params)
    study = optuna.create_study(
        study_name="race", storage=tune.open_storage(params, url), direction="maximize"
    )
    for value in (0.5, 0.6):  # the other process's trials: the study is full
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=value))
    views = iter([1])  # this process checked before the other's last trial started

    def stale_then_real(study, total):
        return next(views, None) or tune.counted_left(study, total)

    monkeypatch.setattr(tune, "counted_left", tune.trials_left, raising=False)
    monkeypatch.setattr(tune, "trials_left", stale_then_real)
    monkeypatch.setattr(tune, "run_trial", lambda job, trial: pytest.fail("trained a surplus"))
    job = tune.TuningJob(params, "mlp", "digits", "race", url, 2, (), "")
    assert tune.run_trials(job) == 0
    trials = study.get_trials()
    assert len(trials) == 3 and trials[2].user_attrs[tune.SURPLUS_ATTR] is True
    assert [t.number for t in tune.counted(trials)] == [0, 1]
    assert "trial failed" not in capsys.readouterr().out


@pytest.mark.parametrize("pruner", ["median", "percentile", "successive_halving"])
def test_no_trial_is_pruned_within_its_warmup_epochs(project, pruner):
    write_params(project, tuning=tuning_section(pruner=pruner, warmup_epochs=2))
    tuning = load_params("params.yaml").tuning.for_family("mlp")
    study = optuna.create_study(direction="maximize", pruner=tune.make_pruner(tuning))
    for _ in range(3):  # finished trials, good at every epoch
        trial = study.ask()
        for epoch in range(1, 5):
            trial.report(0.9, epoch)
            assert not trial.should_prune()  # (successive halving records its rungs here)
        study.tell(trial, 0.9)
    slow = study.ask()
    verdicts = []
    for epoch in range(1, 5):
        slow.report(0.1, epoch)
        verdicts.append(slow.should_prune())
    assert verdicts[:2] == [False, False] and True in verdicts[2:]


def test_pipeline_tunes_entries_are_checked(project):
    pipeline = {"datasets": ["digits"], "runs": {}, "fine_tunes": {}}
    tunes = {"mlp-digits": {"model": "mlp", "dataset": "digits"}}
    write_params(project, pipeline={**pipeline, "tunes": tunes})
    assert load_params("params.yaml").pipeline.tunes["mlp-digits"].model == "mlp"
    write_params(
        project, pipeline={**pipeline, "tunes": {"mlp-iris": {"model": "mlp", "dataset": "iris"}}}
    )
    with pytest.raises(ConfigError, match="pipeline.tunes.mlp-iris uses 'iris'"):
        load_params("params.yaml")
    write_params(project, pipeline={**pipeline, "tunes": {"x": tunes["mlp-digits"]}})
    with pytest.raises(ConfigError, match="pipeline.tunes.x must be named mlp-digits"):
        load_params("params.yaml")


@pytest.mark.slow
def test_study_nests_trials_marks_failed_and_pruned_and_best_reproduces(tuned, monkeypatch, capsys):
    """4 trials: one crashes mid-fit (FAILED, the study goes on), one is pruned (KILLED); the
    best trial's values, trained again with `kerasops train`, give its metric again."""
    should_prune = optuna.trial.Trial.should_prune
    on_epoch_end = tune.TrialReporter.on_epoch_end

    def crash_trial_1(self, epoch, logs=None):
        if self.trial.number == 1:
            raise RuntimeError("worker lost its data")
        return on_epoch_end(self, epoch, logs)

    with monkeypatch.context() as patch:
        patch.setattr(
            optuna.trial.Trial, "should_prune", lambda t: t.number == 3 or should_prune(t)
        )
        patch.setattr(tune.TrialReporter, "on_epoch_end", crash_trial_1)
        assert main(["tune", "mlp", "--dataset", "digits", "--study", "s1", *FAST]) == 0

    states = {t.number: t.state.name for t in study_trials(tuned, "s1")}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE", 3: "PRUNED"}
    runs = runs_of(tuned, "s1")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    status = {int(r.data.tags[tune.TRIAL_TAG]): r.info.status for r in children}
    assert status == {0: "FINISHED", 1: "FAILED", 2: "FINISHED", 3: "KILLED"}
    keys = {"model.dropout", "model.hidden_units", "train.learning_rate"}
    assert len({frozenset(r.data.params) for r in children}) == 1  # same keys on every trial
    assert keys <= set(children[0].data.params) and keys <= set(parent.data.params)
    for run in children:
        assert run.data.tags["dataset"] == "digits" and run.data.tags["git.commit"] is not None
        assert run.data.tags["dvc.prepared.digits"]
    best = max(
        (r for r in children if r.info.status == "FINISHED"),
        key=lambda r: r.data.metrics["objective"],
    )
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(best.data.metrics["objective"])
    assert parent.data.tags["best.run_id"] == best.info.run_id
    assert {k: parent.data.params[k] for k in keys} == {k: best.data.params[k] for k in keys}

    out = capsys.readouterr().out
    assert "trial failed: worker lost its data" in out and "best trial" in out
    overrides = [f"{k}={best.data.params[k]}" for k in sorted(keys)]
    args = ["train", "mlp", "--dataset", "digits", *FAST]
    assert main([*args, *(a for o in overrides for a in ("--set", o))]) == 0
    again = MlflowClient().search_runs(
        [best.info.experiment_id], filter_string="attributes.run_name = 'mlp-digits'"
    )[0]
    assert again.data.metrics["val_accuracy"] == pytest.approx(
        best.data.metrics["objective"], abs=1e-6
    )

    # the same name with another space is refused, the study untouched
    params = load_yaml((tuned / "params.yaml").read_text())
    params["tuning"]["mlp"]["space"]["dropout"]["high"] = 0.5
    original = (tuned / "params.yaml").read_text()
    (tuned / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["tune", "mlp", "--dataset", "digits", "--study", "s1"]) == 2
    assert "already searched another space" in capsys.readouterr().err
    assert len(study_trials(tuned, "s1")) == 4
    # --apply on the finished study: no trial more, the best values into models.mlp
    (tuned / "params.yaml").write_text(original)
    assert main(["tune", "mlp", "--dataset", "digits", "--study", "s1", "--apply"]) == 0
    assert len(study_trials(tuned, "s1")) == 4
    text = (tuned / "params.yaml").read_text()
    assert "# the dense stack" in text
    section = load_params(tuned / "params.yaml").models["mlp"]
    # an objective the model never logs stops the study at its first trial, in one line
    write_params(tuned, tuning=tuning_section(objective="val_acc", trials=3))
    assert main(["tune", "mlp", "--dataset", "digits", "--study", "s2", *FAST]) == 2
    assert "'val_acc' is not a metric the model logs each epoch" in capsys.readouterr().err
    assert [t.state.name for t in study_trials(tuned, "s2")] == ["FAIL"]
    assert section.preset == "mlp_small"
    assert section.values["dropout"] == pytest.approx(float(best.data.params["model.dropout"]))
    assert section.train["learning_rate"] == pytest.approx(
        float(best.data.params["train.learning_rate"])
    )


def tune_command(project: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "kerasops", "tune", "mlp", "--dataset", "digits", *args]


@pytest.mark.slow
def test_a_killed_study_resumes_without_repeating_or_losing_a_trial(project):
    """Killed during its second trial, the study is rerun: that trial runs again with its
    values, the finished one is not repeated, and the study ends with its 3 trials.

    Nothing prunes the second trial: a trial pruned after its first epochs is RUNNING for
    about a second, which a slow machine's polls can miss (CI did)."""
    tuned = write_tuned(project, pruner="none")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = tune_command(tuned, "--study", "killed", "--trials", "3", "--set", "epochs=20")
    process = subprocess.Popen(
        command,
        cwd=tuned,
        env=env,
        stdout=(tuned / "tune.log").open("w"),  # "trial failed:" lines too
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            time.sleep(0.2)
            db = tuned / "artifacts" / "optuna.db"
            if db.exists() and any(  # running, its params drawn: killed mid-training
                t.number == 1 and t.state.name == "RUNNING" and t.params for t in safe_trials(tuned)
            ):
                break
        else:
            states = [(t.number, t.state.name) for t in safe_trials(tuned)]
            pytest.fail(
                f"the study never showed its second trial running (trials: {states}): "
                + (tuned / "tune.log").read_text()[-2000:]
            )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    killed = {t.number: t for t in study_trials(tuned, "killed")}
    assert killed[1].state.name == "RUNNING"
    time.sleep(2.5)  # twice tuning.heartbeat_seconds: its heartbeat is stale
    assert (
        main(["tune", "mlp", "--dataset", "digits", "--study", "killed", "--trials", "3", *FAST])
        == 0
    )
    trials = study_trials(tuned, "killed")
    assert trials[1].state.name == "FAIL"  # the killed one
    retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 1]
    assert len(retries) == 1 and retries[0].params == killed[1].params
    assert retries[0].state.name in ("COMPLETE", "PRUNED")
    assert len(tune.counted(trials)) == 3
    assert sum(t.params == killed[0].params for t in trials) == 1  # the finished one: once


def safe_trials(project: Path) -> list:
    try:
        return study_trials(project, "killed")
    except KeyError:  # not created yet
        return []


@pytest.mark.slow
@pytest.mark.integration
def test_trials_fan_out_over_two_dask_worker_processes(tuned):
    """`--parallel 2` runs the study on a local Dask cluster of two worker processes through
    Prefect's DaskTaskRunner (its temporary server under artifacts/prefect)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    command = tune_command(tuned, "--study", "fan", "--parallel", "2", *FAST)
    done = subprocess.run(command, cwd=tuned, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    children = [r for r in runs_of(tuned, "fan") if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4
    processes = {r.data.tags[tune.PROCESS_TAG] for r in children}
    assert len(processes) == 2 and f":{os.getpid()}" not in " ".join(processes)
    assert len(tune.counted(study_trials(tuned, "fan"))) == 4


@pytest.mark.slow
def test_two_tune_processes_share_one_study_without_overshooting(project):
    """Two `kerasops tune` processes started at once on one study: one MLflow parent run, and
    together exactly `--trials` trials trained and counted.

    Heartbeats at the default 10 s: two processes training on two cores can starve a 1 s
    heartbeat past its 2 s grace, and the other process then fails a live trial. CI saw trial 0
    FAIL twice; the second time its process said why: both processes logged the new dataset
    input at once and MLflow's store refused the second insert (UNIQUE constraint), which
    log_data_input now tries again."""
    tuned = write_tuned(project, heartbeat_seconds=10)
    assert main(["prepare", "digits"]) == 0  # not twice at once
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = tune_command(tuned, "--study", "shared", "--trials", "3", *FAST)
    processes = [
        subprocess.Popen(
            command, cwd=tuned, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    said = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=400)
        assert process.returncode == 0, stderr[-3000:]
        said.append(stdout[-2000:])
    runs = runs_of(tuned, "shared")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 3
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    counted = tune.counted(study_trials(tuned, "shared"))
    states = [t.state.name for t in counted]
    assert len(counted) == 3 and set(states) <= {"COMPLETE", "PRUNED"}, (states, said)
