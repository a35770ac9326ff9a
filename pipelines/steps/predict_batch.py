"""The batch-scoring step: a served model's SavedModel, loaded from the serving repository as
the server loads it, scores a prepared dataset, an image folder or a CSV in bounded batches;
the predictions go to a CSV or Parquet file (renamed into place whole), and each batch is
logged as the server logs requests (`PredictionLog` records under `serving.prediction_log_dir`),
so `kerasops monitor` sees batch traffic as it sees live traffic.

Which version scores: `version`, a models.config `label`, a registry `alias` (`champion`: the
served version holding the registered version the alias names), or by default the one the
server's version policy serves (the newest it loads). A CSV's feature columns are the ones the
version names (`feature_names` in its self-description), by name; a version without names takes
them in file order.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from kerasops.data.progress import counter
from kerasops.errors import ConfigError, KerasopsError
from kerasops.pipelines.config import Params
from kerasops.pipelines.steps.runner import named
from kerasops.serving.batch import (
    SPLITS,
    BatchInput,
    PredictionTable,
    fit_input,
    open_input,
    output_format,
)
from kerasops.serving.config import BatchingConfig, ServingConfig
from kerasops.serving.errors import ServingError
from kerasops.serving.prediction_log import LoggingSpec, PredictionLogger
from kerasops.serving.repository import (
    ModelEntry,
    RepositoryError,
    feature_names,
    list_models,
    list_versions,
    mapping_for,
    read_models_config,
    select_versions,
    version_info,
)
from kerasops.serving.servable import Servable

MAX_PENDING_LOGS = 4  # log records a job lets wait for the writer before it waits itself


@dataclasses.dataclass(frozen=True)
class BatchJob:
    """What to score, with which version, and where the predictions go."""

    model: str
    input: str
    output: str
    version: int | None = None
    label: str | None = None
    alias: str | None = None
    signature: str | None = None
    format: str | None = None  # csv | parquet; default: the output's suffix
    split: str = "all"  # a prepared dataset's split, or all three
    key_column: str | None = None  # a CSV's key column (default: the row number)
    batch_size: int = 256
    skip_corrupt: bool = False  # leave unreadable images out (counted) instead of failing
    log_sampling: float = 1.0  # the share of log records written (0: none)
    log_rows: int = 64  # rows per log record, as a client's request holds them

    def check(self) -> None:
        """Raise ConfigError naming the option that is wrong."""
        chosen = [f for f in ("version", "label", "alias") if getattr(self, f) is not None]
        if len(chosen) > 1:
            raise ConfigError(f"give one of --version, --label or --alias, not {chosen}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.log_rows < 1:
            raise ConfigError(f"--log-rows must be >= 1, got {self.log_rows}")
        if not 0.0 <= self.log_sampling <= 1.0:
            raise ConfigError(f"--log-sampling must be in [0, 1], got {self.log_sampling}")
        if self.split not in (*SPLITS, "all"):
            raise ConfigError(f"--split {self.split!r}: use train, val, test or all")


@dataclasses.dataclass(frozen=True)
class BatchReport:
    """What one batch job scored and wrote."""

    model: str
    version: int
    signature: str
    input: str
    input_kind: str
    rows: int
    output: str
    format: str
    seconds: float
    skipped: tuple[tuple[str, str], ...] = ()  # (key, why) of unreadable examples left out
    log_records: int = 0
    log_dropped: int = 0
    log_dir: str = ""
    column_rule: str = ""  # a CSV's: which columns fed the model, by name or by order

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def to_markdown(self) -> str:
        lines = [
            f"# Batch scoring with {self.model} version {self.version}",
            "",
            f"{self.rows} rows of {self.input} ({self.input_kind}) scored by signature "
            f"`{self.signature}` in {self.seconds:.1f} s ({self.rows_per_second:.0f} rows/s), "
            f"written to `{self.output}` ({self.format}).",
            *(["", f"CSV columns: {self.column_rule}."] if self.column_rule else []),
            "",
            f"Prediction log: {self.log_records} records under `{self.log_dir}`"
            + (f", {self.log_dropped} dropped" if self.log_dropped else "")
            + ".",
        ]
        if self.skipped:
            lines += ["", f"{len(self.skipped)} unreadable inputs skipped:", ""]
            lines += [f"- `{key}`: {why}" for key, why in self.skipped]
        return "\n".join([*lines, ""])


class _LogCounts:
    """The metrics a PredictionLogger reports to: records written and dropped."""

    def __init__(self) -> None:
        self.logged = 0
        self.dropped = 0

    def prediction_logged(self, model: str) -> None:
        self.logged += 1

    def prediction_dropped(self, model: str, reason: str) -> None:
        self.dropped += 1


def model_entry(config: ServingConfig, name: str) -> ModelEntry:
    """`name`'s models.config entry, or (without one) its repository folder under the serving
    version policy; raise KerasopsError naming the models there are."""
    path = Path(config.models_config)
    try:
        entries = read_models_config(path, mapping_for(config)) if path.is_file() else []
    except RepositoryError as exc:
        raise KerasopsError(str(exc)) from None
    entry = next((e for e in entries if e.name == name), None)
    if entry is None and list_versions(Path(config.model_repository) / name):
        entry = ModelEntry(name, Path(config.model_repository) / name, config.version_policy)
    if entry is None or not list_versions(entry.base_path):
        known = sorted({e.name for e in entries} | set(list_models(Path(config.model_repository))))
        raise KerasopsError(
            f"unknown model {name!r}: no version of it in {config.model_repository}"
            + (f" (served models: {', '.join(known)})" if known else "")
            + "; export or publish it first (kerasops export)"
        )
    return entry


def served_version(params: Params, config: ServingConfig, job: BatchJob) -> tuple[int, Path]:
    """The served version the job scores with, and its folder."""
    entry = model_entry(config, job.model)
    available = list_versions(entry.base_path)
    if job.version is not None:
        number = job.version
        if number not in available:
            raise KerasopsError(
                f"{job.model} has no version {number} (versions: {', '.join(map(str, available))})"
            )
    elif job.label is not None:
        labels = entry.label_map()
        if job.label not in labels or labels[job.label] not in available:
            known = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"
            raise KerasopsError(f"{job.model} has no version labelled {job.label!r} ({known})")
        number = labels[job.label]
    elif job.alias is not None:
        number = _aliased_version(params, entry, job.alias, available)
    else:
        chosen = select_versions(available, entry.policy) or available
        number = max(chosen)  # what the server answers when a request names no version
    return number, entry.base_path / str(number)


def _aliased_version(params: Params, entry: ModelEntry, alias: str, available: list[int]) -> int:
    """The newest served version holding the registered version `alias` names."""
    # deferred: only an alias needs MLflow's registry
    from kerasops.pipelines.tracking import registry, store

    store.configure(params)
    registered = registry.aliases(entry.name).get(alias)
    if registered is None:
        raise KerasopsError(
            f"registered model {entry.name!r} has no alias {alias!r} in the MLflow registry"
        )
    holding = [
        v
        for v in available
        if str(version_info(entry.base_path / str(v)).get("registered_version")) == registered
    ]
    if not holding:
        raise KerasopsError(
            f"{entry.name}@{alias} is registered version {registered}, which no served version "
            f"holds: publish it first (kerasops export --model-uri models:/{entry.name}@{alias} "
            f"--name {entry.name})"
        )
    return max(holding)


def _log_batch(
    logger: PredictionLogger,
    spec: LoggingSpec,
    job: BatchJob,
    version: int,
    signature: str,
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
) -> None:
    """Offer one scored batch as records of at most `log_rows` rows, waiting (not dropping)
    while the writer is behind."""
    rows = len(next(iter(inputs.values())))
    for start in range(0, rows, job.log_rows):
        part = slice(start, start + job.log_rows)
        while logger.pending() >= MAX_PENDING_LOGS:
            time.sleep(0.001)
        logger.offer(
            spec,
            job.model,
            version,
            signature,
            {k: v[part] for k, v in inputs.items()},
            {k: v[part] for k, v in outputs.items()},
        )


@named("predict-batch")
def predict_batch(params: Params, job: BatchJob) -> BatchReport:
    """Score `job.input` with a served version of `job.model` into `job.output`; log the
    requests. Raise KerasopsError for a mistake (unknown model or version, a missing, unreadable
    or unfitting input, an unwritable output); an existing output is replaced only on success."""
    job.check()
    root = Path(params.root)
    config = params.serving.at_root(root)
    output = Path(job.output).expanduser()
    fmt = output_format(output, job.format)
    number, folder = served_version(params, config, job)
    servable = Servable(job.model, number, folder, BatchingConfig(enabled=False))
    try:
        return _score(params, config, job, servable, output, fmt)
    finally:
        servable.close()


def _input_of(servable: Servable, job: BatchJob, params: Params) -> tuple[Any, Any, BatchInput]:
    """The signature to call, its one input's spec, and the job's input opened against it."""
    try:
        signature = servable.signature(job.signature)
    except ServingError as exc:
        raise KerasopsError(exc.message) from None
    if len(signature.inputs) != 1:
        raise KerasopsError(
            f"signature {signature.name!r} takes {len(signature.inputs)} inputs "
            f"({', '.join(signature.inputs)}); predict-batch feeds models of one input"
        )
    (spec,) = signature.inputs.values()
    splits = SPLITS if job.split == "all" else (job.split,)
    prepared = params.path("prepared_data")
    names = feature_names(servable.path)  # () for a version exported without them
    source = open_input(job.input, spec, prepared, splits, job.skip_corrupt, job.key_column, names)
    return signature, spec, source


def _logger(config: ServingConfig, job: BatchJob, counts: _LogCounts) -> PredictionLogger | None:
    """The server's prediction-log writer on `serving.prediction_log_dir` (None: not logging)."""
    if job.log_sampling <= 0:
        return None
    return PredictionLogger(
        Path(config.prediction_log_dir),
        counts,
        int(config.prediction_log_max_file_mb * 1024 * 1024),
        config.prediction_log_max_file_s,
        queue_size=MAX_PENDING_LOGS * 2,
    )


def _score(
    params: Params,
    config: ServingConfig,
    job: BatchJob,
    servable: Servable,
    output: Path,
    fmt: str,
) -> BatchReport:
    signature, spec, source = _input_of(servable, job, params)
    counts = _LogCounts()
    logger = _logger(config, job, counts)
    log_spec = LoggingSpec(f"batch/{job.model}", job.log_sampling)
    started = time.perf_counter()
    bar = counter(source.total, f"scoring {Path(job.input).name}", "row")
    try:
        with PredictionTable(output, fmt) as table:
            for chunk in source.chunks(job.batch_size):
                inputs = {spec.name: fit_input(chunk.values, spec, config.allow_nan)}
                try:
                    outputs = signature.run(inputs)
                except ServingError as exc:
                    raise KerasopsError(f"{job.model} could not score {job.input}: {exc}") from None
                table.write(chunk.keys, outputs)
                if logger is not None:
                    version = servable.version
                    _log_batch(logger, log_spec, job, version, signature.name, inputs, outputs)
                bar.update(len(chunk.keys))
    finally:
        bar.close()
        if logger is not None:
            logger.close(timeout=60.0)
    return BatchReport(
        model=job.model,
        version=servable.version,
        signature=signature.name,
        input=str(source.path),
        input_kind=source.kind,
        rows=table.rows,
        output=str(output),
        format=fmt,
        seconds=time.perf_counter() - started,
        skipped=tuple(source.skipped),
        log_records=counts.logged,
        log_dropped=counts.dropped,
        log_dir=str(Path(config.prediction_log_dir) / "batch") if logger is not None else "",
        column_rule=source.column_rule,
    )
