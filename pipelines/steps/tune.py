"""The tune step: an Optuna study over `tuning.<family>.space`, every trial one training run.

`tune_model` is the one definition of tuning: `kerasops tune` calls it directly for one worker,
the Prefect tuning flow calls it with a runner whose tasks run on a Dask cluster. A study lives
in Optuna's RDB storage (SQLite under artifacts/ by default, PostgreSQL at scale), so any number
of processes share it and a killed study resumes where it stopped. In MLflow a study is one
parent run; each trial is a training run (`train_model`) nested under it (`mlflow.parentRunId`)
with the same param keys as every training run, pruned trials KILLED and failed ones FAILED.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import shutil
import socket
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import keras
import mlflow
import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from kerasops.config import parse_override
from kerasops.errors import ConfigError, KerasopsError
from kerasops.pipelines.config import Params, resolve_run_config
from kerasops.pipelines.config.tuning import FamilyTuning, SpaceParam
from kerasops.pipelines.steps.prepare import ensure_prepared
from kerasops.pipelines.steps.runner import DirectRunner, StepRunner, named
from kerasops.pipelines.steps.train import train_model
from kerasops.pipelines.tracking import store as tracking
from kerasops.pipelines.tracking.lineage import lineage_tags
from kerasops.pipelines.training.distribute import limit_threads

STUDY_TAG = "kerasops.study"  # on the parent and every trial run
TRIAL_TAG = "kerasops.trial"  # the trial's number
STATE_TAG = "kerasops.trial_state"  # COMPLETE | PRUNED | FAIL
PROCESS_TAG = "kerasops.trial_process"  # host:pid of the process that trained it
FINGERPRINT_ATTR = "kerasops.fingerprint"
SURPLUS_ATTR = "kerasops.surplus"  # a trial started once the study had its trials (not counted)
PARENT_ATTR = "kerasops.mlflow_parent_run"
RUN_ATTR = "mlflow_run_id"


class ObjectiveMissing(KerasopsError):
    """The objective is not among the metrics a model logs each epoch: every trial would fail."""


class SurplusTrial(KerasopsError):
    """Another process drew the study's last trial between this one's check and its start."""


@dataclasses.dataclass(frozen=True)
class TuningJob:
    """Everything a worker process needs to run trials of a study (it is sent to Dask workers)."""

    params: Params
    model: str
    dataset: str
    study: str
    storage: str
    trials: int
    overrides: tuple[tuple[str, Any], ...]
    parent_run_id: str
    threads: int = 0  # TensorFlow's intra-op threads per trial process; 0: TensorFlow's choice

    @property
    def tuning(self) -> FamilyTuning:
        return self.params.tuning.for_family(self.model)


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """A study after this call: its best trial, and how many trials ended in each state."""

    study: str
    parent_run_id: str
    objective: str
    best_value: float | None
    best_trial: int | None
    best_values: dict[str, Any]
    states: dict[str, int]


def storage_url(params: Params) -> str:
    """`tuning.storage`, or SQLite under artifacts/."""
    if params.tuning.storage:
        return params.tuning.storage
    return f"sqlite:///{params.path('artifacts') / 'optuna.db'}"


warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_storage(params: Params, url: str) -> RDBStorage:
    """Optuna's RDB storage with heartbeats: a trial whose process died is failed after twice
    `tuning.heartbeat_seconds` and run again with its values, once."""
    beat = params.tuning.heartbeat_seconds
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(url.removeprefix("sqlite:///")) or ".", exist_ok=True)
        kwargs = {"connect_args": {"timeout": 60}}  # processes writing at once wait their turn
    with study_lock(url):  # processes creating a new SQLite storage's tables at once collide
        return RDBStorage(
            url,
            engine_kwargs=kwargs,
            heartbeat_interval=beat,
            grace_period=2 * beat,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )


def make_sampler(tuning: FamilyTuning, offset: int) -> optuna.samplers.BaseSampler:
    """The sampler, seeded distinctly per worker and per resumption (`offset`)."""
    seed = tuning.seed + offset
    if tuning.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(tuning.startup_trials, 1))


def make_pruner(tuning: FamilyTuning) -> optuna.pruners.BasePruner:
    startup = tuning.startup_trials
    first = tuning.warmup_epochs + 1  # the first epoch (steps count from 1) a trial may stop at
    pruners: dict[str, Any] = {
        "median": lambda: optuna.pruners.MedianPruner(startup, n_warmup_steps=first),
        "percentile": lambda: optuna.pruners.PercentilePruner(25.0, startup, first),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=first),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=first),
        "none": optuna.pruners.NopPruner,
    }
    return pruners[tuning.pruner]()


def load_study(job: TuningJob, offset: int = 0) -> optuna.Study:
    return optuna.load_study(
        study_name=job.study,
        storage=open_storage(job.params, job.storage),
        sampler=make_sampler(job.tuning, offset),
        pruner=make_pruner(job.tuning),
    )


def check_space(
    params: Params, model: str, dataset: str, overrides: Mapping[str, Any]
) -> FamilyTuning:
    """`tuning.<model>`, its every edge value type-checked against the model's config with the
    overrides; ConfigError naming the key otherwise."""
    tuning = params.tuning.for_family(model)
    base = {k: p.values_to_check()[0] for k, p in tuning.space.items()}
    resolve_run_config(params, model, dataset, None, {**overrides, **base})
    for key, param in tuning.space.items():
        for value in param.values_to_check():
            try:
                resolve_run_config(params, model, dataset, None, {**overrides, **base, key: value})
            except ConfigError as exc:
                raise ConfigError(f"tuning.{model}.space {key} = {value!r}: {exc}") from None
    return tuning


def prepare_study(
    params: Params,
    model: str,
    dataset: str,
    study: str | None = None,
    overrides: Sequence[str] = (),
) -> tuple[str, dict[str, Any]]:
    """Check the space and, for an existing study, that it searched the same space for the
    same model and dataset: (study name, overrides), nothing stored changed on an error."""
    pairs = dict(parse_override(o) for o in overrides)
    tuning = check_space(params, model, dataset, pairs)
    name = study or f"{model}-{dataset}"
    url = storage_url(params)
    if not url.startswith("sqlite:///") or os.path.exists(url.removeprefix("sqlite:///")):
        existing = existing_study(params, url, name)
        stored = existing.user_attrs.get(FINGERPRINT_ATTR) if existing else None
        if stored is not None and stored != tuning.fingerprint(model, dataset):
            raise ConfigError(
                f"study {name!r} already searched another space (or model, dataset or "
                "objective); pass --study NEW_NAME, or restore its tuning section"
            )
    return name, pairs


def config_study_name(
    params: Params, model: str, dataset: str, overrides: Sequence[str] = ()
) -> str:
    """`<model>-<dataset>-<hash>`: named by the space, the objective and the config trials start
    from (less the searched keys), so a changed config gets a study of its own and the same
    config resumes its own (a DVC stage's study; `--trials` may grow it)."""
    tuning = params.tuning.for_family(model)
    pairs = dict(parse_override(o) for o in overrides)
    base = resolve_run_config(params, model, dataset, None, pairs).to_dict()
    for key in tuning.space:
        section, _, name = key.partition(".")
        base["train" if section == "train" else "model_config"].pop(name, None)
    text = json.dumps([tuning.fingerprint(model, dataset), base], sort_keys=True, default=str)
    return f"{model}-{dataset}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def summary(result: TuneResult) -> dict[str, Any]:
    """A study's outcome as flat JSON (a DVC stage's metrics file): the best value and trial,
    the trial counts by state, the best values under their param keys."""
    return {
        "study": result.study,
        "mlflow_parent_run": result.parent_run_id,
        "objective": result.objective,
        f"best_{result.objective}": result.best_value,
        "best_trial": result.best_trial,
        **{f"trials_{state.lower()}": count for state, count in result.states.items() if count},
        "best": result.best_values,
    }


def existing_study(params: Params, url: str, name: str) -> optuna.Study | None:
    try:
        storage = open_storage(params, url)
        if name not in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
            return None
        return optuna.load_study(study_name=name, storage=storage)
    except (ImportError, ValueError, SQLAlchemyError) as exc:  # a bad URL, driver or server
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"cannot open tuning.storage {url!r}: {reason}") from None


def counted(trials: Sequence[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The study's trials, less those replaced by a retry (their process died) and those
    started once it had its trials."""
    replaced = {RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in trials}
    return [t for t in trials if t.number not in replaced and not t.user_attrs.get(SURPLUS_ATTR)]


def check_not_surplus(job: TuningJob, trial: optuna.Trial) -> None:
    """Raise SurplusTrial (the trial marked, never trained) when the study already had its
    trials before this one: two processes that both saw one trial left start one each, and
    the storage numbers them, so the later one gives way."""
    trials = counted(trial.study.get_trials(deepcopy=False))
    earlier = [t for t in trials if t.number < trial.number]
    if len(earlier) >= job.trials:
        trial.set_user_attr(SURPLUS_ATTR, True)
        raise SurplusTrial(
            f"study {job.study} already has its {job.trials} trials (another process started "
            "the last one first); this one is not run"
        )


def trials_left(study: optuna.Study, total: int) -> int:
    trials = study.get_trials(deepcopy=False)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return max(total - len(counted(trials)), 0) + waiting


def suggest(trial: optuna.Trial, space: Mapping[str, SpaceParam]) -> dict[str, Any]:
    """One value per searched key; list choices travel as JSON text (Optuna's choices are
    scalars)."""
    values: dict[str, Any] = {}
    for key, p in space.items():
        if p.type == "int":
            step = int(p.step or 1)
            values[key] = trial.suggest_int(key, int(p.low), int(p.high), step=step)  # type: ignore[arg-type]
        elif p.type in ("float", "log_float"):
            values[key] = trial.suggest_float(
                key,
                p.low,
                p.high,
                step=p.step,
                log=p.type == "log_float",  # type: ignore[arg-type]
            )
        else:
            texts = [json.dumps(c) for c in p.choices or []]
            values[key] = json.loads(trial.suggest_categorical(key, texts))
    return values


class TrialReporter(keras.callbacks.Callback):
    """Reports the objective to the Optuna trial after every epoch and prunes it when the
    pruner says so; remembers the MLflow run it reports in."""

    def __init__(self, trial: optuna.Trial, objective: str):
        super().__init__()
        self.trial = trial
        self.objective = objective
        self.values: list[float] = []
        self.run_id = ""

    def on_train_begin(self, logs=None):
        active = mlflow.active_run()
        self.run_id = active.info.run_id if active else ""
        if self.run_id:
            self.trial.set_user_attr(RUN_ATTR, self.run_id)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.objective not in logs:
            raise ObjectiveMissing(
                f"objective {self.objective!r} is not a metric the model logs each epoch "
                f"(it logs {', '.join(sorted(logs))}); set tuning.<family>.objective"
            )
        value = float(logs[self.objective])
        if not math.isfinite(value):
            return  # the non-finite loss stop fails the trial
        self.values.append(value)
        self.trial.report(value, step=epoch + 1)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}: {self.objective}={value}")


def run_trial(job: TuningJob, trial: optuna.Trial) -> float:
    """Train one trial as a run nested under the study's parent; its best epoch's objective."""
    tuning = job.tuning
    values = suggest(trial, tuning.space)
    run = resolve_run_config(
        job.params, job.model, job.dataset, None, {**dict(job.overrides), **values}
    )
    reporter = TrialReporter(trial, tuning.objective)
    tags = {
        "mlflow.parentRunId": job.parent_run_id,
        STUDY_TAG: job.study,
        TRIAL_TAG: str(trial.number),
        PROCESS_TAG: f"{socket.gethostname()}:{os.getpid()}",
    }
    name = f"{job.study}-trial-{trial.number:03d}"
    params = job.params.replace(
        tracking=job.params.tracking.replace(system_metrics=False, mlflow_evaluate=False)
    )
    try:
        result = train_model(params, run, tags=tags, name=name, callbacks=[reporter])
    except optuna.TrialPruned:
        mark_trial_run(reporter.run_id, "PRUNED", "KILLED")
        raise
    except BaseException:
        mark_trial_run(reporter.run_id, "FAIL", None)  # the train step marked it FAILED
        raise
    shutil.rmtree(result.run_dir, ignore_errors=True)  # its outputs are in MLflow
    if not reporter.values:
        raise KerasopsError(f"trial {trial.number}: no finite {tuning.objective} was reported")
    best = max(reporter.values) if tuning.direction == "maximize" else min(reporter.values)
    client = MlflowClient()
    client.log_metric(result.run_id, "objective", best)
    client.set_tag(result.run_id, STATE_TAG, "COMPLETE")
    return best


def mark_trial_run(run_id: str, state: str, status: str | None) -> None:
    if not run_id:
        return
    client = MlflowClient()
    client.set_tag(run_id, STATE_TAG, state)
    if status:
        client.set_terminated(run_id, status=status)


@named("trials")
def run_trials(job: TuningJob, worker: int = 0) -> int:
    """Run trials of the study until it has `job.trials`; return how many this call ran.

    A crashing or diverging trial is marked failed and the next one starts; a trial whose
    process died is failed once its heartbeat is stale and run again with the same values.
    """
    limit_threads(job.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_study(job)
    study = load_study(job, offset=1000 * worker + len(study.trials))
    ran = 0
    error: list[BaseException] = []

    def objective(trial: optuna.Trial) -> float:
        try:
            check_not_surplus(job, trial)
            return run_trial(job, trial)
        except (optuna.TrialPruned, KeyboardInterrupt):
            raise
        except BaseException as exc:
            error.append(exc)
            raise

    while True:
        optuna.storages.fail_stale_trials(study)
        if trials_left(study, job.trials) <= 0:
            return ran
        error.clear()
        study.optimize(objective, n_trials=1, catch=(Exception,))
        if error and isinstance(error[0], SurplusTrial):
            return ran
        ran += 1
        if error:
            print(f"trial failed: {error[0]}", flush=True)
            if isinstance(error[0], ObjectiveMissing):
                raise error[0]


def open_parent(params: Params, job: TuningJob, study: optuna.Study) -> str:
    """The study's MLflow parent run (created on its first call, RUNNING again on a resume)."""
    experiment_id = tracking.configure(params)
    client = MlflowClient()
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        with contextlib.suppress(MlflowException):
            client.update_run(run_id, status="RUNNING")
            return str(run_id)
    tuning = job.tuning
    tags = {
        "mlflow.runName": job.study,
        STUDY_TAG: job.study,
        "model": job.model,
        "dataset": job.dataset,
        **lineage_tags(params, [job.dataset]),
    }
    run = client.create_run(experiment_id, run_name=job.study, tags=tags)
    for key, value in {
        "study": job.study,
        "objective": tuning.objective,
        "direction": tuning.direction,
        "sampler": tuning.sampler,
        "pruner": tuning.pruner,
        **{f"space.{k}": json.dumps(p.to_dict()) for k, p in tuning.space.items()},
    }.items():
        client.log_param(run.info.run_id, key, value)
    study.set_user_attr(PARENT_ATTR, run.info.run_id)
    return run.info.run_id


def close_parent(job: TuningJob, study: optuna.Study) -> TuneResult:
    """The best trial's values and metric on the parent run, which ends FINISHED."""
    trials = counted(study.get_trials(deepcopy=False))
    states = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    client = MlflowClient()
    parent = job.parent_run_id
    for state, count in states.items():
        client.log_metric(parent, f"trials_{state.lower()}", count)
    tuning = job.tuning
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        client.set_terminated(parent, status="FAILED")
        return TuneResult(job.study, parent, tuning.objective, None, None, {}, states)
    best = study.best_trial
    values = decoded(best.params, tuning)
    client.log_metric(parent, f"best_{tuning.objective}", float(best.value))  # type: ignore[arg-type]
    client.log_metric(parent, "best_trial", best.number)
    logged = client.get_run(parent).data.params
    for key, value in values.items():
        client.set_tag(parent, f"best.{key}", json.dumps(value))
        if key not in logged:  # params are immutable: a later, better trial shows in best.*
            client.log_param(parent, key, value)
    client.set_tag(parent, "best.run_id", best.user_attrs.get(RUN_ATTR, ""))
    client.set_terminated(parent, status="FINISHED")
    return TuneResult(
        job.study,
        parent,
        tuning.objective,
        float(best.value),
        best.number,
        values,
        states,  # type: ignore[arg-type]
    )


def decoded(values: Mapping[str, Any], tuning: FamilyTuning) -> dict[str, Any]:
    """A trial's params as the model takes them (list choices back from their JSON)."""
    return {
        k: json.loads(v) if tuning.space[k].type == "categorical" else v
        for k, v in values.items()
        if k in tuning.space
    }


@contextlib.contextmanager
def study_lock(url: str) -> Iterator[None]:
    """Processes opening a study in one SQLite storage (one machine) do so one at a time (not
    reentrant: never nest two)."""
    if not url.startswith("sqlite:///"):
        yield
        return
    with open(url.removeprefix("sqlite:///") + ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tune_model(
    params: Params,
    model: str,
    dataset: str,
    trials: int | None = None,
    parallel: int = 1,
    study: str | None = None,
    overrides: Sequence[str] = (),
    runner: StepRunner | None = None,
) -> TuneResult:
    """Run (or resume) the study of `model` on `dataset` until it holds `trials` trials, with
    `parallel` workers through `runner`; raise ConfigError on a bad space or a reused name."""
    name, pairs = prepare_study(params, model, dataset, study, overrides)
    tuning = params.tuning.for_family(model)
    ensure_prepared(params, dataset)  # before the study is stored: lineage hashes the data
    url = storage_url(params)
    storage = open_storage(params, url)
    job = TuningJob(
        params, model, dataset, name, url, trials or tuning.trials, tuple(pairs.items()), ""
    )
    with study_lock(url):  # a second process at once finds the first's parent run
        created = optuna.create_study(
            study_name=name, storage=storage, direction=tuning.direction, load_if_exists=True
        )
        created.set_user_attr(FINGERPRINT_ATTR, tuning.fingerprint(model, dataset))
        job = dataclasses.replace(job, parent_run_id=open_parent(params, job, created))
    workers = max(parallel, 1)
    if workers > 1:
        job = dataclasses.replace(job, threads=max((os.cpu_count() or 1) // workers, 1))
    outcomes = (runner or DirectRunner()).map(run_trials, [(job, i) for i in range(workers)])
    result = close_parent(job, load_study(job))
    for outcome in outcomes:
        outcome.result()  # a worker's error (an objective the model never logs) is raised
    return result
