"""Validate a prepared dataset against a schema inferred from a reference version.

The reference is the previous prepared version of the same dataset that passed validation, kept
as a copy in `<prepared_root>/../reference/<name>/` (`data/reference/<name>/` by default; see
`keep_reference`). Without a reference (the first version) only the checks that need none run.

Each check is named and ends as `pass`, `warn` (logged, does not stop a pipeline) or `fail`
(stops it). Raising is the caller's choice: `ValidationError` carries a failed report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kerasops.config import StrictConfig, require
from kerasops.data.errors import DataError
from kerasops.data.manifest import Manifest
from kerasops.data.prepared import PreparedData, load_prepared
from kerasops.data.tasks import class_labels, is_labelled, target_samples

Status = Literal["pass", "warn", "fail"]


@dataclasses.dataclass(frozen=True)
class ValidationConfig(StrictConfig):
    """Thresholds of the checks (params.yaml `pipeline.validation`).

    Args:
        max_missing_fraction: NaN/inf values or empty texts above this fraction fail.
        min_class_fraction: a class below this share of the training split warns.
        max_leakage_fraction: test (or val) examples also found in train above this fraction
            fail; any overlap at all warns.
        drift_warn_psi: population stability index above which drift warns.
        drift_fail_psi: PSI above which drift fails; null: drift only ever warns.
    """

    max_missing_fraction: float = 0.0
    min_class_fraction: float = 0.02
    max_leakage_fraction: float = 0.0
    drift_warn_psi: float = 0.1
    drift_fail_psi: float | None = None

    def validate(self) -> None:
        for name in ("max_missing_fraction", "min_class_fraction", "max_leakage_fraction"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, f"pipeline.validation.{name} must be in [0, 1]")
        require(self.drift_warn_psi > 0, "pipeline.validation.drift_warn_psi must be positive")


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One named check's outcome."""

    name: str
    status: Status
    message: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    """Every check on one prepared version, against its reference (if any)."""

    dataset: str
    content_hash: str
    reference_hash: str | None
    checks: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if c.status == "fail")

    @property
    def warnings(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if c.status == "warn")

    def summary(self) -> str:
        """One line: the verdict and each failed check by name."""
        if self.passed:
            return f"validation of {self.dataset!r} passed ({len(self.warnings)} warnings)"
        failed = "; ".join(f"{c.name}: {c.message}" for c in self.failures)
        return f"validation of {self.dataset!r} failed: {failed}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "content_hash": self.content_hash,
            "reference_hash": self.reference_hash,
            "passed": self.passed,
            "failures": len(self.failures),
            "warnings": len(self.warnings),
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_markdown(self) -> str:
        reference = self.reference_hash[:12] if self.reference_hash else "none (first version)"
        verdict = "passed" if self.passed else "**FAILED**"
        lines = [
            f"### Validation of `{self.dataset}`: {verdict}",
            "",
            f"version `{self.content_hash[:12]}`, reference `{reference}`",
            "",
            "| check | status | details |",
            "|---|---|---|",
        ]
        lines += [f"| {c.name} | {c.status} | {c.message} |" for c in self.checks]
        return "\n".join(lines) + "\n"


class ValidationError(DataError):
    """A prepared dataset failed validation; `report` names each failed check."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.summary())
        self.report = report


def validate_prepared(
    current: PreparedData,
    reference: PreparedData | None,
    config: ValidationConfig | None = None,
) -> ValidationReport:
    """Run every check on `current` (against `reference` when given); never raises on bad data."""
    config = config or ValidationConfig()
    checks = [
        check_schema(current, reference),
        check_label_set(current, reference),
        check_missing_values(current, config),
        check_class_balance(current, config),
        check_split_leakage(current, config),
        check_drift(current, reference, config),
    ]
    manifest = current.manifest
    return ValidationReport(
        dataset=manifest.name,
        content_hash=manifest.content_hash,
        reference_hash=reference.manifest.content_hash if reference else None,
        checks=tuple(c for c in checks if c is not None),
    )


def _result(name: str, problems: list[str], ok: str, status: Status = "fail") -> CheckResult:
    if problems:
        return CheckResult(name, status, "; ".join(problems))
    return CheckResult(name, "pass", ok)


MAX_DRIFT_SAMPLE = 1_000_000  # input values compared for drift; a larger split is subsampled


@dataclasses.dataclass
class SplitSummary:
    """What every check needs from one split, gathered in one streaming pass over it."""

    count: int = 0
    x_shapes: set = dataclasses.field(default_factory=set)
    y_shapes: set = dataclasses.field(default_factory=set)
    x_kinds: set = dataclasses.field(default_factory=set)
    missing: dict = dataclasses.field(default_factory=lambda: {"x": [0, 0], "y": [0, 0]})
    labels: list = dataclasses.field(default_factory=list)  # then (L,) int32 class indices
    digests: list = dataclasses.field(default_factory=list)  # then (N,) uint64, one per example
    samples: dict = dataclasses.field(default_factory=dict)


_SUMMARIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def summarize(prepared: PreparedData, split: str) -> SplitSummary:
    """The split's summary, computed once per loaded split (batches, never the whole split)."""
    data = prepared.splits[split]
    if data not in _SUMMARIES:
        _SUMMARIES[data] = _summarize(data, prepared.manifest)
    return _SUMMARIES[data]


def _summarize(data, manifest) -> SplitSummary:
    summary = SplitSummary()
    per_example = int(np.prod(manifest.input_shape)) if manifest.input_shape else 1
    stride = max(1, -(-len(data) * per_example // MAX_DRIFT_SAMPLE))  # ceil
    samples: dict[str, list[np.ndarray]] = {}
    seen = 0  # examples before this batch
    for x, y in data.batches():
        x, y = np.asarray(x), np.asarray(y)
        summary.count += len(y)
        summary.x_shapes.add(tuple(x.shape[1:]))
        summary.y_shapes.add(tuple(y.shape[1:]))
        summary.x_kinds.add(x.dtype.kind)
        if len(x) != len(y):
            summary.x_shapes.add(("inputs", len(x), "targets", len(y)))
        for part, values in (("x", x), ("y", y)):
            summary.missing[part][0] += _missing_count(values)
            summary.missing[part][1] += values.size
        if is_labelled(manifest.task):
            summary.labels.append(target_labels(y, manifest.task).astype(np.int32))
        summary.digests.append(example_digests(x))
        for name, values in _batch_samples(x, y, manifest, stride, seen).items():
            samples.setdefault(name, []).append(values)
        seen += len(y)
    summary.samples = {n: np.concatenate(v) for n, v in samples.items()}
    summary.labels = np.concatenate(summary.labels) if summary.labels else np.zeros(0, np.int32)
    summary.digests = np.concatenate(summary.digests) if summary.digests else np.zeros(0, "<u8")
    return summary


def _missing_count(values: np.ndarray) -> int:
    if values.size == 0:
        return 0
    if values.dtype.kind in "OUS":
        return int(sum(not str(v).strip() for v in values.reshape(-1)))
    return int(np.sum(~np.isfinite(np.asarray(values, dtype="float64"))))


def _batch_samples(
    x: np.ndarray, y: np.ndarray, manifest, stride: int, seen: int
) -> dict[str, np.ndarray]:
    """The batch's share of the drift samples. Texts and table rows are sampled by example
    (every `stride`-th of the split, counted from its first, so the sample does not depend on the
    batch size), so a large split's samples stay within MAX_DRIFT_SAMPLE values."""
    samples: dict[str, np.ndarray] = {}
    if manifest.input_dtype == "string" or manifest.kind == "tabular":
        rows = slice(-seen % stride, None, stride)
        x, y = x[rows], y[rows]
    if manifest.input_dtype == "string":
        samples["text length (words)"] = np.array([len(str(t).split()) for t in x], dtype=float)
    elif manifest.kind == "tabular":
        for i in range(x.shape[-1]):
            samples[f"feature {i}"] = x[:, i].astype(float)
    else:
        samples["input values"] = x.reshape(-1)[::stride].astype(float)
    samples.update(target_samples(y, manifest.task))
    return samples


def check_schema(current: PreparedData, reference: PreparedData | None) -> CheckResult:
    """Shards decode to the manifest's shapes, dtypes and counts; the manifest matches the
    reference's."""
    manifest, problems = current.manifest, []
    string = manifest.input_dtype == "string"
    for split in current.splits:
        summary = summarize(current, split)
        for x_shape in sorted(summary.x_shapes, key=str):
            if x_shape and x_shape[0] == "inputs":
                problems.append(f"{split} has {x_shape[1]} inputs but {x_shape[3]} targets")
            elif x_shape != tuple(manifest.input_shape):
                problems.append(f"{split} x shape {x_shape} != {tuple(manifest.input_shape)}")
        for y_shape in sorted(summary.y_shapes, key=str):
            if y_shape != tuple(manifest.target_shape):
                problems.append(f"{split} y shape {y_shape} != {tuple(manifest.target_shape)}")
        for kind in sorted(summary.x_kinds):
            if string != (kind in "OUS"):
                problems.append(f"{split} x dtype kind {kind!r} is not {manifest.input_dtype}")
        sharded = current.splits[split].shards is not None
        if sharded and summary.count != manifest.splits.get(split):
            problems.append(
                f"{split} has {summary.count} examples, the manifest says "
                f"{manifest.splits.get(split)}"
            )
    if reference is not None:
        ref = reference.manifest
        for key in ("kind", "task", "input_shape", "input_dtype", "target_shape"):
            if getattr(manifest, key) != getattr(ref, key):
                problems.append(
                    f"{key} {getattr(manifest, key)} differs from the reference's "
                    f"{getattr(ref, key)}"
                )
    shape = f"{manifest.kind} {tuple(manifest.input_shape)} {manifest.input_dtype}"
    return _result("schema", problems, f"{shape} -> {tuple(manifest.target_shape)}")


def target_labels(y: np.ndarray, task: str) -> np.ndarray:
    """Class indices of a split's targets: one per example, or one per box for detection."""
    return class_labels(y, task)


def check_label_set(current: PreparedData, reference: PreparedData | None) -> CheckResult | None:
    """Labels are valid class indices, every class is in train, classes match the reference."""
    manifest = current.manifest
    if not is_labelled(manifest.task):
        return None
    problems, n = [], len(manifest.classes)
    for split in current.splits:
        y = summarize(current, split).labels
        if y.size and (y.min() < 0 or y.max() >= n):
            problems.append(f"{split} has labels outside 0..{n - 1}")
    present = set(np.unique(summarize(current, "train").labels).tolist())
    absent = [c for i, c in enumerate(manifest.classes) if i not in present]
    if absent:
        problems.append(f"classes missing from train: {', '.join(absent)}")
    if reference is not None and manifest.classes != reference.manifest.classes:
        added = sorted(set(manifest.classes) - set(reference.manifest.classes))
        removed = sorted(set(reference.manifest.classes) - set(manifest.classes))
        problems.append(f"label set changed (new: {added or 'none'}, gone: {removed or 'none'})")
    return _result("label_set", problems, f"{n} classes: {', '.join(manifest.classes)}")


def missing_fraction(x: np.ndarray) -> float:
    """Share of NaN/inf numbers, or of empty texts."""
    x = np.asarray(x)
    return _missing_count(x) / x.size if x.size else 0.0


def check_missing_values(current: PreparedData, config: ValidationConfig) -> CheckResult:
    problems = []
    for split in current.splits:
        for part, (missing, total) in summarize(current, split).missing.items():
            fraction = missing / total if total else 0.0
            if fraction > config.max_missing_fraction:
                problems.append(f"{split} {part}: {fraction:.2%} missing")
    return _result("missing_values", problems, "no missing values")


def check_class_balance(current: PreparedData, config: ValidationConfig) -> CheckResult | None:
    """Warn when a class holds less than `min_class_fraction` of the training split."""
    manifest = current.manifest
    if not is_labelled(manifest.task):
        return None
    n = len(manifest.classes)
    labels = summarize(current, "train").labels
    labels = labels[(labels >= 0) & (labels < n)]  # others fail the label_set check
    counts = np.bincount(labels, minlength=n)
    shares = counts / max(1, counts.sum())
    rare = [
        f"{c} {s:.1%}"
        for c, s in zip(manifest.classes, shares, strict=True)
        if s < config.min_class_fraction
    ]
    message = f"rarest class {shares.min():.1%}, largest {shares.max():.1%} of train"
    if rare:
        return CheckResult(
            "class_balance", "warn", f"below {config.min_class_fraction:.0%}: {', '.join(rare)}"
        )
    return CheckResult("class_balance", "pass", message)


def example_digests(x: np.ndarray) -> np.ndarray:
    """A 64-bit digest per example, (N,) uint64: identical examples (bytes or text) give
    identical digests (8 bytes an example, however large the split)."""
    if x.dtype.kind in "OUS":
        parts = [hashlib.sha1(str(v).encode("utf-8")).digest()[:8] for v in x.reshape(-1)]
    else:
        rows = np.ascontiguousarray(x).reshape(len(x), -1)
        parts = [hashlib.sha1(row.tobytes()).digest()[:8] for row in rows]
    return np.frombuffer(b"".join(parts), dtype="<u8")


def check_split_leakage(current: PreparedData, config: ValidationConfig) -> CheckResult:
    """Identical examples (by content hash) in train and in test (or val)."""
    train = np.unique(summarize(current, "train").digests)
    problems, overlaps, status = [], [], "pass"
    for split in ("val", "test"):
        digests = summarize(current, split).digests
        shared = int(np.isin(digests, train, assume_unique=False).sum())
        if not shared:
            continue
        fraction = shared / len(digests)
        overlaps.append(f"{shared} of {len(digests)} {split} examples also in train")
        if fraction > config.max_leakage_fraction:
            problems.append(f"{overlaps[-1]} ({fraction:.2%})")
    if problems:
        return CheckResult("split_leakage", "fail", "; ".join(problems))
    if overlaps:
        status = "warn"
    return CheckResult("split_leakage", status, "; ".join(overlaps) or "no shared examples")


def feature_samples(prepared: PreparedData) -> dict[str, np.ndarray]:
    """One 1-D sample per compared distribution of the training split (input values of a
    large split subsampled evenly to at most MAX_DRIFT_SAMPLE)."""
    return summarize(prepared, "train").samples


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of `current` against `reference`, on the reference's deciles."""
    reference, current = reference[np.isfinite(reference)], current[np.isfinite(current)]
    if reference.size == 0 or current.size == 0:
        return 0.0
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) <= 2:  # (nearly) constant or few values: one bin per distinct value
        values = np.union1d(np.unique(reference), np.unique(current))
        if len(values) > 50:
            values = np.unique(np.quantile(np.concatenate([reference, current]), [0.5]))
        edges = np.concatenate([[-np.inf], (values[:-1] + values[1:]) / 2, [np.inf]])
    else:
        edges = np.concatenate([[-np.inf], edges[1:-1], [np.inf]])
    expected = np.histogram(reference, edges)[0] / reference.size + 1e-4
    actual = np.histogram(current, edges)[0] / current.size + 1e-4
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def check_drift(
    current: PreparedData, reference: PreparedData | None, config: ValidationConfig
) -> CheckResult | None:
    """PSI of each input/label distribution of train against the reference's train split."""
    if reference is None:
        return CheckResult("drift", "pass", "no reference version yet: nothing to compare")
    ref_samples, cur_samples = feature_samples(reference), feature_samples(current)
    shared = [name for name in cur_samples if name in ref_samples]
    scores = {name: psi(ref_samples[name], cur_samples[name]) for name in shared}
    if not scores:
        return CheckResult("drift", "warn", "no distribution comparable with the reference")
    worst = max(scores, key=scores.get)
    top = f"largest PSI {scores[worst]:.3f} ({worst})"
    drifted = [f"{n} PSI {s:.3f}" for n, s in scores.items() if s > config.drift_warn_psi]
    if config.drift_fail_psi is not None and scores[worst] > config.drift_fail_psi:
        return CheckResult("drift", "fail", f"{', '.join(drifted)} > {config.drift_fail_psi}")
    if drifted:
        return CheckResult("drift", "warn", f"{', '.join(drifted)} > {config.drift_warn_psi}")
    return CheckResult("drift", "pass", top)


def reference_dir(prepared_root: Path, name: str) -> Path:
    """Where the reference version of dataset `name` is kept: `<prepared_root>/../reference/`."""
    return Path(prepared_root).parent / "reference" / name


def load_reference(prepared_root: Path, name: str) -> PreparedData | None:
    """The kept reference version of `name`, or None when there is none yet."""
    folder = reference_dir(prepared_root, name)
    if not (folder / "manifest.json").is_file():
        return None
    return load_prepared(name, folder.parent)


def keep_reference(prepared_root: Path, name: str) -> Path:
    """Copy the prepared version of `name` to its reference folder, replacing the old one whole."""
    source, target = Path(prepared_root) / name, reference_dir(prepared_root, name)
    if not (source / "manifest.json").is_file():
        raise DataError(f"dataset {name!r} is not prepared; nothing to keep as reference")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
    try:
        listed = Manifest.read(source / "manifest.json").files
        for path in [source / "manifest.json", *(source / f for f in sorted(listed))]:
            shutil.copy2(path, staging / path.name)
        old = target.with_name(f".{name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
