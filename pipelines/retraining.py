"""Scheduled retraining: a challenger replaces the served champion only when it is better and
proven to serve. Each step is a plain function; `pipelines.retraining_flow` sequences them.

State lives in two places, and each step changes at most one of them at a time:

- the MLflow registry: model versions tagged with the data version and params hash that made
  them (`kerasops.data_version`, `kerasops.params_hash`), aliases `challenger`, `champion`,
  `previous`, and the gate's verdict (`kerasops.gate`);
- the serving repository: numbered SavedModel versions whose `assets.extra/kerasops_export.json`
  names the registered version they hold (`registered_model`, `registered_version`).

Retrying a cycle is safe: an existing run or version for the same inputs is reused instead of
trained or registered again, publishing a registered version that is already the latest served
one is a no-op, and a failure after publishing withdraws the new served version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.config import KerasopsError, require
from pipelines.retraining_config import GateRule, RetrainingConfig
from pipelines.settings import Params, resolve_run_config

log = logging.getLogger(__name__)

CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous", "challenger"
TAG_DATA = "kerasops.data_version"
TAG_PARAMS = "params_hash"  # set by train_model on every run
TAG_GATE = "kerasops.gate"  # promoted | rejected | infra_failed, once a cycle decided
DECIDED = ("promoted", "rejected", "infra_failed")
INFO_FILE = "kerasops_export.json"


class RetrainingError(KerasopsError):
    """A retraining step cannot go on (nothing to roll back to, a broken serving repository)."""


# -- registry -------------------------------------------------------------------------------


def client() -> Any:
    """An MlflowClient on the configured store (call `tracking.configure` first)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def aliases(name: str) -> dict[str, str]:
    """Alias -> version of a registered model ({} when the model is not registered yet)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client().get_registered_model(name)
    except MlflowException:
        return {}
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


def model_versions(name: str) -> list[Any]:
    """Every registered version of `name`, oldest first."""
    found = client().search_model_versions(f"name = '{name}'")
    return sorted(found, key=lambda v: int(v.version))


def set_aliases(name: str, wanted: Mapping[str, str | None]) -> None:
    """Point each alias at a version, or delete it (None)."""
    mlflow_client, current = client(), aliases(name)
    for alias, version in wanted.items():
        if version is None:
            if alias in current:
                mlflow_client.delete_registered_model_alias(name, alias)
        elif current.get(alias) != version:
            mlflow_client.set_registered_model_alias(name, alias, version)


# -- 1. data version ------------------------------------------------------------------------


def detect_data_version(params: Params, dataset: str) -> str:
    """Prepare `dataset` when needed and return the DVC hash of its prepared version."""
    from pipelines.lineage import dataset_version
    from pipelines.train import ensure_prepared

    ensure_prepared(dataset, params)
    return dataset_version(params, dataset)


def has_new_data(name: str, data_version: str) -> bool:
    """False when a cycle already decided on a challenger trained on `data_version`."""
    return not any(
        v.tags.get(TAG_DATA) == data_version and v.tags.get(TAG_GATE) in DECIDED
        for v in model_versions(name)
    )


# -- 2. validation --------------------------------------------------------------------------


def validate_data(params: Params, dataset: str) -> Any:
    """Validate the prepared data against its reference (#3); raise ValidationError on failure."""
    from pipelines.steps import validate_dataset

    return validate_dataset(params, dataset)


# -- 3. challenger --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Challenger:
    """A registered model version trained for this cycle (or found from an earlier try)."""

    name: str
    version: str
    run_id: str
    data_version: str
    params_hash: str
    trained: bool  # False: an earlier try's run or version was reused


def params_hash(
    params: Params, model: str, dataset: str, preset: str | None, overrides: Sequence[str]
) -> str:
    """The resolved config's hash; raise ConfigError for a bad or multi-worker config."""
    from pipelines.distribute import require_one_process

    config = resolve_run_config(params, model, dataset, preset, overrides)
    require_one_process(config.train)
    return config.params_hash()


def find_training_run(model: str, dataset: str, data_version: str, hash_: str) -> str | None:
    """The newest finished run of `model` on this data version with this config, if any."""
    import mlflow

    runs = mlflow.search_runs(
        filter_string=(
            f"tags.model = '{model}' and tags.dataset = '{dataset}' and "
            f"tags.`{TAG_DATA}` = '{data_version}' and tags.{TAG_PARAMS} = '{hash_}' and "
            "attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0].info.run_id if runs else None


def train_challenger(
    params: Params,
    model: str,
    dataset: str,
    data_version: str,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    tags: Mapping[str, str] | None = None,
) -> tuple[str, bool]:
    """Train (tracked in MLflow) unless a finished run for the same inputs exists.

    Returns the run id and whether it was trained now.
    """
    from pipelines import tracking
    from pipelines.train import train_model

    tracking.configure(params)
    hash_ = params_hash(params, model, dataset, preset, overrides)
    existing = find_training_run(model, dataset, data_version, hash_)
    if existing is not None:
        log.info("reusing run %s: same data version and config", existing)
        return existing, False
    run_tags = {TAG_DATA: data_version, "kerasops.flow": "retraining", **(tags or {})}
    result = train_model(params, model, dataset, preset, overrides, tags=run_tags)
    return result.run_id, True


def register_challenger(name: str, run_id: str, data_version: str, hash_: str) -> Challenger:
    """Register the run's model as a version of `name` (once) and alias it `challenger`."""
    import mlflow

    existing = [v for v in model_versions(name) if v.run_id == run_id]
    if existing:
        version = existing[-1]
    else:
        tags = {TAG_DATA: data_version, TAG_PARAMS: hash_, "kerasops.run_id": run_id}
        version = mlflow.register_model(f"runs:/{run_id}/model", name, tags=tags)
    if aliases(name).get(CHAMPION) != str(version.version):
        set_aliases(name, {CHALLENGER: str(version.version)})
    return Challenger(name, str(version.version), run_id, data_version, hash_, not existing)


# -- 4. evaluation and the gate ---------------------------------------------------------------


def load_version(name: str, version: str) -> Any:
    """The Keras model of a registered version."""
    import mlflow

    import models  # noqa: F401  (registers the custom layers before loading)

    return mlflow.keras.load_model(f"models:/{name}/{version}")


def evaluate_version(params: Params, dataset: str, name: str, version: str, split: str) -> dict:
    """Metrics of a registered version on one split of the current prepared data."""
    from data import load_prepared
    from pipelines.evaluate import evaluate_model

    prepared = load_prepared(dataset, params.path("prepared_data"))
    return evaluate_model(load_version(name, version), prepared, split).metrics


@dataclasses.dataclass(frozen=True)
class GateCheck:
    """One threshold of one metric, and whether the challenger met it."""

    metric: str
    rule: str  # minimum | maximum | max_regression | min_improvement
    threshold: float
    value: float | None  # the challenger's metric, or its change against the champion
    passed: bool

    def describe(self) -> str:
        if self.value is None:
            return f"{self.metric}: not computed for this model"
        op = {"minimum": ">=", "maximum": "<=", "max_regression": ">= -"}.get(self.rule, ">=")
        what = self.metric if self.rule in ("minimum", "maximum") else f"change in {self.metric}"
        return f"{what} = {self.value:.4f} (needs {op}{self.threshold:g})"


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """The blessing: passed only when every check passed."""

    passed: bool
    checks: tuple[GateCheck, ...]
    challenger: dict[str, float]
    champion: dict[str, float] | None

    def reasons(self) -> list[str]:
        return [check.describe() for check in self.checks if not check.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "checks": [dataclasses.asdict(c) for c in self.checks],
            "challenger": self.challenger,
            "champion": self.champion,
        }

    def to_markdown(self) -> str:
        lines = ["| metric | rule | threshold | value | passed |", "|---|---|---|---|---|"]
        for c in self.checks:
            value = "n/a" if c.value is None else f"{c.value:.4f}"
            mark = "yes" if c.passed else "**no**"
            lines.append(f"| {c.metric} | {c.rule} | {c.threshold:g} | {value} | {mark} |")
        return "\n".join(lines)


def gate(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    rules: Mapping[str, GateRule],
) -> GateDecision:
    """Judge the challenger: absolute thresholds always, change thresholds against a champion.

    Changes are measured so that positive is better (`direction` says which way that is).
    """
    checks: list[GateCheck] = []
    for metric, rule in rules.items():
        value = challenger.get(metric)
        for kind in ("minimum", "maximum"):
            bound = getattr(rule, kind)
            if bound is not None:
                ok = value is not None and (value >= bound if kind == "minimum" else value <= bound)
                checks.append(GateCheck(metric, kind, bound, value, ok))
        if champion is None:
            continue
        reference = champion.get(metric)
        change = None
        if value is not None and reference is not None:
            change = value - reference if rule.direction == "higher" else reference - value
        if rule.max_regression is not None:
            ok = change is not None and change >= -rule.max_regression
            checks.append(GateCheck(metric, "max_regression", rule.max_regression, change, ok))
        if rule.min_improvement is not None:
            ok = change is not None and change >= rule.min_improvement
            checks.append(GateCheck(metric, "min_improvement", rule.min_improvement, change, ok))
    passed = bool(checks) and all(c.passed for c in checks)
    return GateDecision(passed, tuple(checks), dict(challenger), dict(champion or {}) or None)


# -- 5. infra-validation ----------------------------------------------------------------------


def serving_config(params: Params, **changes: Any) -> Any:
    """The `serving:` section with its repository paths resolved against the project root."""
    from serving.config import ServingConfig

    config = ServingConfig.from_dict(dict(params.serving or {}), prefix="serving.")
    root = Path(params.root)
    paths = {
        "model_repository": str(root / config.model_repository),
        "models_config": str(root / config.models_config),
    }
    return config.replace(**{**paths, **changes})


def version_info(version_dir: Path) -> dict[str, Any]:
    """The export's self-description (assets.extra/kerasops_export.json), {} when absent."""
    path = version_dir / "assets.extra" / INFO_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def stage_export(params: Params, name: str, version: str, dataset: str, requests: int) -> Path:
    """Export a registered version to a staging repository as `<staging>/models/<name>/1`.

    The export carries warmup requests made of real examples of the held-out split.
    """
    from data import load_prepared
    from serving.export import export_saved_model

    staging = params.path("artifacts") / "serving" / "staging" / f"{name}-v{version}"
    shutil.rmtree(staging, ignore_errors=True)  # a half-finished earlier try
    config = serving_config(
        params,
        model_repository=str(staging / "models"),
        models_config=str(staging / "models.config"),
        num_warmup_records=requests,
    )
    prepared = load_prepared(dataset, params.path("prepared_data"))
    details = client().get_model_version(name, version)
    result = export_saved_model(
        load_version(name, version),
        name,
        config=config,
        version=1,
        warmup_examples=np.asarray(prepared.splits["test"].x[:requests]),
        class_names=prepared.manifest.classes or None,
        info={
            "registered_model": name,
            "registered_version": str(version),
            "mlflow_run_id": details.run_id,
            "data_version": details.tags.get(TAG_DATA, ""),
        },
    )
    return result.path


@dataclasses.dataclass(frozen=True)
class InfraReport:
    """What the staged export did when served: per-protocol latencies and answer differences."""

    passed: bool
    staged: str
    requests: int
    latency_ms: dict[str, list[float]]
    max_abs_diff: dict[str, float]
    problems: tuple[str, ...]

    def metrics(self) -> dict[str, float]:
        values = {"infra.requests": float(self.requests)}
        for protocol, times in self.latency_ms.items():
            if times:
                values[f"infra.{protocol}_p50_ms"] = float(np.median(times))
                values[f"infra.{protocol}_max_ms"] = float(np.max(times))
        for protocol, diff in self.max_abs_diff.items():
            values[f"infra.{protocol}_max_abs_diff"] = diff
        return values


def warmup_inputs(version_dir: Path) -> list[dict[str, np.ndarray]]:
    """The inputs of every PredictRequest in the export's warmup file."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    require(path.is_file(), f"{version_dir} has no warmup requests to validate with")
    batches = []
    for record in tf.data.TFRecordDataset(str(path)):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        inputs = entry.predict_log.request.inputs
        batches.append({key: tf.make_ndarray(tensor) for key, tensor in inputs.items()})
    return batches


def infra_validate(
    params: Params, name: str, version: str, staged: Path, config: RetrainingConfig
) -> InfraReport:
    """Serve the staged export in the embedded server, send its warmup requests over REST and
    gRPC, and compare each answer with the in-process prediction and the latency bound."""
    from serving.server import EmbeddedServer, model_entries

    bound = config.infra_validation
    serving = serving_config(
        params,
        model_repository=str(staged.parent.parent),
        models_config=str(staged.parent.parent.parent / "models.config"),
        rest_port=0,
        grpc_port=0,
    )
    model = load_version(name, version)
    batches = warmup_inputs(staged)
    entries, config_path = model_entries(serving)
    server = EmbeddedServer(serving, entries, config_path)
    server.start()
    try:
        latency, diffs = _exchange(server, name, model, batches)
    finally:
        server.stop()
    problems = []
    for protocol, times in latency.items():
        slow = [t for t in times if t > bound.latency_bound_ms]
        if slow:
            problems.append(
                f"{protocol}: {len(slow)} of {len(times)} answers slower than "
                f"{bound.latency_bound_ms:g} ms (slowest {max(slow):.1f} ms)"
            )
        if diffs[protocol] > bound.tolerance:
            problems.append(
                f"{protocol}: answers differ from in-process predictions by up to "
                f"{diffs[protocol]:.3g} (tolerance {bound.tolerance:g})"
            )
    return InfraReport(not problems, str(staged), len(batches), latency, diffs, tuple(problems))


def _exchange(
    server: Any, name: str, model: Any, batches: list[dict[str, np.ndarray]]
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Send every batch over both protocols; return latencies (ms) and max |served - local|."""
    from serving.client import GrpcClient, RestClient

    host = server.config.host
    clients = {
        "rest": RestClient(f"http://{host}:{server.rest_port}"),
        "grpc": GrpcClient(f"{host}:{server.grpc_port}"),
    }
    latency: dict[str, list[float]] = {p: [] for p in clients}
    diffs = {p: 0.0 for p in clients}
    try:
        for inputs in batches:
            expected = np.asarray(model.predict(next(iter(inputs.values())), verbose=0))
            for protocol, serving_client in clients.items():
                started = time.perf_counter()
                outputs = serving_client.predict(name, inputs, version=1)
                latency[protocol].append((time.perf_counter() - started) * 1000)
                answer = np.asarray(next(iter(outputs.values())), dtype="float64")
                diff = float(np.max(np.abs(answer.reshape(expected.shape) - expected)))
                diffs[protocol] = max(diffs[protocol], diff)
    finally:
        for serving_client in clients.values():
            serving_client.close()
    return latency, diffs


# -- 6. publishing and promotion ----------------------------------------------------------------


def served_versions(params: Params, name: str) -> dict[int, str | None]:
    """Served version number -> the registered version it holds (None if not recorded)."""
    from serving.repository import list_versions

    base = Path(serving_config(params).model_repository) / name
    return {
        v: (version_info(base / str(v)).get("registered_version") or None)
        for v in list_versions(base)
    }


def latest_served(params: Params, name: str) -> int | None:
    versions = served_versions(params, name)
    return max(versions) if versions else None


@dataclasses.dataclass(frozen=True)
class Publication:
    served_version: int
    registered_version: str
    created: bool  # False: the latest served version already held it


def canary_labels(params: Params, name: str, version: str) -> dict[str, int | None]:
    """Labels for a canary publication of registered `version`: `stable` stays on the newest
    served version holding another registered version."""
    policy = serving_config(params).version_policy
    if policy.policy == "latest" and policy.num_versions < 2:
        raise RetrainingError(
            "retraining.canary needs two loaded versions: set serving.version_policy."
            "num_versions to 2 or more"
        )
    others = [v for v, r in served_versions(params, name).items() if r != version]
    return {"stable": max(others), "canary": None} if others else {"canary": None}


def publish(
    params: Params,
    name: str,
    source: Path,
    registered_version: str,
    labels: Mapping[str, int | None] | None = None,
) -> Publication:
    """Publish a staged (validated) export as the next served version, in one rename.

    A no-op when the latest served version already holds `registered_version`.
    """
    from serving.repository import list_versions, mapping_for, update_models_config

    serving = serving_config(params)
    base = Path(serving.model_repository) / name
    served = served_versions(params, name)
    if served and served[max(served)] == registered_version:
        _label(serving, name, base, max(served), labels)
        return Publication(max(served), registered_version, False)
    base.mkdir(parents=True, exist_ok=True)
    for leftover in [*base.glob(".publish-*"), *base.glob(".withdrawn-*")]:
        shutil.rmtree(leftover, ignore_errors=True)  # from a publisher killed mid-copy
    existing = list_versions(base)
    number = existing[-1] + 1 if existing else 1
    staging = base / f".publish-{number}-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(source, staging)
        info_path = staging / "assets.extra" / INFO_FILE
        info = {**version_info(staging), "version": number, "published_at": time.time()}
        info["registered_version"] = registered_version
        info_path.write_text(json.dumps(info, indent=2, default=str) + "\n")
        os.rename(staging, base / str(number))  # atomic: a poller never sees half a version
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    update_models_config(
        Path(serving.models_config), name, base, serving.version_policy, None, mapping_for(serving)
    )
    _label(serving, name, base, number, labels)
    return Publication(number, registered_version, True)


def _label(
    serving: Any, name: str, base: Path, version: int, labels: Mapping[str, int | None] | None
) -> None:
    """Point labels at versions (None: at `version`, the one just published)."""
    if not labels:
        return
    from serving.repository import mapping_for, update_models_config

    mapping = {label: target or version for label, target in labels.items()}
    update_models_config(
        Path(serving.models_config),
        name,
        base,
        serving.version_policy,
        mapping,
        mapping_for(serving),
    )


def withdraw(params: Params, name: str, served_version: int) -> None:
    """Take a just-published served version away again (the poller falls back to the last)."""
    base = Path(serving_config(params).model_repository) / name
    target = base / str(served_version)
    if target.exists():
        retired = base / f".withdrawn-{served_version}-{uuid.uuid4().hex[:8]}"
        os.rename(target, retired)
        shutil.rmtree(retired, ignore_errors=True)


def served_source(params: Params, name: str, registered_version: str) -> Path | None:
    """The newest served version folder holding `registered_version`, if any."""
    base = Path(serving_config(params).model_repository) / name
    matches = [v for v, r in served_versions(params, name).items() if r == registered_version]
    return base / str(max(matches)) if matches else None


@contextlib.contextmanager
def publication(
    params: Params,
    name: str,
    source: Path,
    version: str,
    labels: Mapping[str, int | None] | None = None,
) -> Iterator[Publication]:
    """Publish, then run the body (the alias moves); if anything raises, withdraw the new
    served version, restore models.config and the aliases, and re-raise."""
    before, served_before = aliases(name), latest_served(params, name)
    models_config = Path(serving_config(params).models_config)
    config_text = models_config.read_text() if models_config.is_file() else None
    try:
        yield publish(params, name, source, version, labels)
    except BaseException:
        served = latest_served(params, name)
        if served is not None and served != served_before:
            withdraw(params, name, served)
        _restore(models_config, config_text)
        set_aliases(name, {a: before.get(a) for a in (CHAMPION, PREVIOUS, CHALLENGER)})
        raise


def _restore(path: Path, text: str | None) -> None:
    if text is None:
        path.unlink(missing_ok=True)
        return
    if path.is_file() and path.read_text() == text:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.restore")
    tmp.write_text(text)
    os.replace(tmp, path)


def promote(
    params: Params, challenger: Challenger, staged: Path, config: RetrainingConfig
) -> Publication:
    """Serve the challenger as the next version, then make it `champion` (old one `previous`).

    With `config.canary`, the new served version gets label `canary` and the one served before
    it label `stable` (the version policy must keep both loaded). A failure anywhere leaves the
    aliases and the served versions as they were.
    """
    name, current = challenger.name, aliases(challenger.name)
    labels = canary_labels(params, name, challenger.version) if config.canary else {}
    with publication(params, name, staged, challenger.version, labels) as published:
        moves: dict[str, str | None] = {CHALLENGER: None, CHAMPION: challenger.version}
        if current.get(CHAMPION) and current[CHAMPION] != challenger.version:
            moves[PREVIOUS] = current[CHAMPION]
        set_aliases(name, {k: v for k, v in moves.items() if k != CHAMPION})
        set_aliases(name, {CHAMPION: challenger.version})
        record_verdict(challenger, "promoted")
    shutil.rmtree(staged.parent.parent.parent, ignore_errors=True)  # <staging>/<name>-v<N>/
    return published


def record_verdict(challenger: Challenger, verdict: str) -> None:
    """Mark the challenger version (and its run) with the cycle's verdict."""
    mlflow_client = client()
    mlflow_client.set_model_version_tag(challenger.name, challenger.version, TAG_GATE, verdict)
    mlflow_client.set_tag(challenger.run_id, TAG_GATE, verdict)
    if verdict != "promoted" and aliases(challenger.name).get(CHALLENGER) == challenger.version:
        set_aliases(challenger.name, {CHALLENGER: None})


# -- 7. rollback ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rollback:
    name: str
    champion: str  # the registered version serving again
    demoted: str | None
    publication: Publication


def rollback(params: Params, name: str) -> Rollback:
    """Make `previous` the champion again and republish it as the newest served version."""
    current = aliases(name)
    if PREVIOUS not in current:
        raise RetrainingError(
            f"{name} has no 'previous' version to roll back to "
            f"(aliases: {', '.join(f'{a}={v}' for a, v in current.items()) or 'none'})"
        )
    target, demoted = current[PREVIOUS], current.get(CHAMPION)
    source = served_source(params, name, target)
    if source is None:  # the repository lost it: export it again from the registry
        details = client().get_model_version(name, target)
        dataset = client().get_run(details.run_id).data.tags.get("dataset", "")
        requests = params.retraining.infra_validation.requests
        source = stage_export(params, name, target, dataset, requests)
    with publication(params, name, source, target) as published:
        set_aliases(name, {CHAMPION: target, PREVIOUS: None})
        if demoted:
            client().set_model_version_tag(name, demoted, "kerasops.rolled_back", "true")
    return Rollback(name, target, demoted, published)


# -- the cycle's record -----------------------------------------------------------------------


@dataclasses.dataclass
class CycleReport:
    """Everything one retraining cycle found and decided, with each step's wall time."""

    name: str
    model: str
    dataset: str
    outcome: str = "running"
    data_version: str | None = None
    champion_before: str | None = None
    served_before: int | None = None
    challenger: Challenger | None = None
    decision: GateDecision | None = None
    infra: InfraReport | None = None
    publication: Publication | None = None
    failed_step: str | None = None
    error: str | None = None
    steps: dict[str, float] = dataclasses.field(default_factory=dict)
    aliases_after: dict[str, str] = dataclasses.field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time a step; on an exception record which step failed and re-raise."""
        started = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            self.failed_step, self.outcome = name, "failed"
            self.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            raise
        finally:
            self.steps[name] = time.perf_counter() - started

    def metrics(self) -> dict[str, float]:
        values = {f"step_seconds.{k}": v for k, v in self.steps.items()}
        values["step_seconds.total"] = sum(self.steps.values())
        if self.decision is not None:
            values.update({f"challenger.{k}": v for k, v in self.decision.challenger.items()})
            champion = self.decision.champion or {}
            values.update({f"champion.{k}": v for k, v in champion.items()})
        if self.infra is not None:
            values.update(self.infra.metrics())
        return values

    def to_markdown(self) -> str:
        from pipelines.retraining_report import cycle_markdown

        return cycle_markdown(self)


def record_cycle(params: Params, report: CycleReport, flow_run_id: str | None = None) -> str:
    """Log the cycle as its own MLflow run (decision, every metric, step times); return its id."""
    from mlflow.entities import Metric, Param

    from pipelines import tracking

    experiment_id = tracking.configure(params)
    mlflow_client = client()
    report.aliases_after = aliases(report.name)
    tags = {
        "kerasops.flow": "retraining",
        "model": report.model,
        "dataset": report.dataset,
        "registered_model": report.name,
        "kerasops.outcome": report.outcome,
        "kerasops.data_version": report.data_version or "",
        "prefect.flow_run_id": flow_run_id or "",
    }
    if report.challenger is not None:
        tags["challenger_version"] = report.challenger.version
        tags["challenger_run_id"] = report.challenger.run_id
    if report.failed_step:
        tags["kerasops.failed_step"] = report.failed_step
    tags.update({f"alias.{a}": v for a, v in report.aliases_after.items()})
    run = mlflow_client.create_run(experiment_id, run_name=f"retrain-{report.name}", tags=tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in report.metrics().items()]
    parameters = [Param("champion_before", str(report.champion_before))]
    mlflow_client.log_batch(run_id, metrics=metrics, params=parameters)
    mlflow_client.log_text(run_id, report.to_markdown(), "retraining/cycle.md")
    if report.decision is not None:
        mlflow_client.log_dict(run_id, report.decision.to_dict(), "retraining/gate.json")
    status = "FAILED" if report.outcome == "failed" else "FINISHED"
    mlflow_client.set_terminated(run_id, status)
    return run_id


# -- steps as the flow calls them ---------------------------------------------------------------


def start_cycle(params: Params, model: str, dataset: str) -> CycleReport:
    """A new cycle's record, with the champion and served version it starts from."""
    from pipelines import tracking

    config = params.retraining
    require(
        bool(config.gate),
        "retraining.gate in params.yaml lists no metric: add e.g. "
        "test_accuracy: {minimum: 0.8, max_regression: 0.01}",
    )
    tracking.configure(params)
    name = config.model_name(model, dataset)
    return CycleReport(
        name,
        model,
        dataset,
        champion_before=aliases(name).get(CHAMPION),
        served_before=latest_served(params, name),
    )


def evaluate_and_gate(
    params: Params, dataset: str, challenger: Challenger, champion: str | None
) -> GateDecision:
    """Score challenger and champion on the same held-out split of the current data; judge."""
    config = params.retraining
    ours = evaluate_version(params, dataset, challenger.name, challenger.version, config.split)
    theirs = None
    if champion is not None:
        theirs = evaluate_version(params, dataset, challenger.name, champion, config.split)
    return gate(ours, theirs, config.rules())


def stage_and_validate(params: Params, dataset: str, challenger: Challenger) -> InfraReport:
    """Export the challenger to staging and prove it serves (see `infra_validate`)."""
    config = params.retraining
    staged = stage_export(
        params, challenger.name, challenger.version, dataset, config.infra_validation.requests
    )
    return infra_validate(params, challenger.name, challenger.version, staged, config)
