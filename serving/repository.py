"""The model repository in TF Serving's layout and its `models.config`.

```
<repository>/<model_name>/<version>/saved_model.pb      numeric versions, one folder each
<repository>/<model_name>/<version>/variables/
<repository>/<model_name>/<version>/assets.extra/tf_serving_warmup_requests
```

`models.config` is a `ModelServerConfig` text proto (`model_config_list`). TF Serving insists on
absolute base paths, and a container sees the repository at its mount point, not where it lies
here: base paths under `serving.models_config_base_path` (default `/serving/models`, where
docker-compose mounts `artifacts/serving/models`) stand for folders of the local repository, so
the embedded server and TF Serving read the very same file. With that setting empty, base paths
are the repository's absolute local paths.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from kerasops.errors import ConfigError, KerasopsError
from kerasops.serving.config import ServingConfig, VersionPolicyConfig
from kerasops.serving.prediction_log import LoggingSpec

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
INFO_FILE = "kerasops_export.json"  # a version's self-description, in its assets.extra/
FEATURE_NAMES_KEY = "feature_names"  # in INFO_FILE: a feature-row input's columns, in order


class RepositoryError(KerasopsError):
    """A missing or malformed model repository or models.config."""


def check_model_name(name: str) -> str:
    """Return `name` if it is a safe model name (no path separators, no `..`), else raise."""
    if not _NAME.match(name) or ".." in name:
        raise ConfigError(
            f"invalid model name {name!r}: use letters, digits, '_', '-' and '.', "
            "starting with a letter or digit"
        )
    return name


def list_versions(model_base_path: Path) -> list[int]:
    """Numeric version folders under a model's base path, ascending (others are ignored)."""
    if not model_base_path.is_dir():
        return []
    versions = []
    for child in model_base_path.iterdir():
        if child.name.isdigit() and child.is_dir():
            versions.append(int(child.name))
    return sorted(versions)


def list_models(repository: Path) -> list[str]:
    """Model folders in a repository that hold at least one numeric version."""
    if not repository.is_dir():
        return []
    names = []
    for child in sorted(repository.iterdir()):
        if child.is_dir() and _NAME.match(child.name) and list_versions(child):
            names.append(child.name)
    return names


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One model of a models.config: where its versions live and which of them to serve."""

    name: str
    base_path: Path
    policy: VersionPolicyConfig = dataclasses.field(default_factory=VersionPolicyConfig)
    labels: tuple[tuple[str, int], ...] = ()
    logging: LoggingSpec | None = None  # its models.config logging_config, if any

    def label_map(self) -> dict[str, int]:
        return dict(self.labels)


def select_versions(available: list[int], policy: VersionPolicyConfig) -> list[int]:
    """The versions a policy wants served among those `available` (ascending)."""
    if policy.policy == "all":
        return sorted(available)
    if policy.policy == "specific":
        return sorted(v for v in available if v in set(policy.versions))
    return sorted(available)[-policy.num_versions :]


def _policy_to_proto(policy: VersionPolicyConfig, proto: Any) -> None:
    if policy.policy == "all":
        proto.all.SetInParent()
    elif policy.policy == "specific":
        proto.specific.versions.extend(policy.versions)
    else:
        proto.latest.num_versions = policy.num_versions


def _policy_from_proto(proto: Any) -> VersionPolicyConfig:
    kind = proto.WhichOneof("policy_choice")
    if kind == "all":
        return VersionPolicyConfig(policy="all")
    if kind == "specific":
        return VersionPolicyConfig(policy="specific", versions=tuple(proto.specific.versions))
    if kind == "latest":
        return VersionPolicyConfig(policy="latest", num_versions=proto.latest.num_versions or 1)
    return VersionPolicyConfig()


@dataclasses.dataclass(frozen=True)
class PathMapping:
    """Base paths under `served_root` (as TF Serving sees them) are folders of `local_root`."""

    served_root: str
    local_root: Path

    def to_served(self, local: Path) -> str:
        """The base path to write for a local model folder."""
        local = local.resolve()
        if self.served_root:
            try:
                relative = local.relative_to(self.local_root.resolve())
                return f"{self.served_root.rstrip('/')}/{relative.as_posix()}"
            except ValueError:
                pass
        return str(local)

    def to_local(self, served: str, config_dir: Path) -> Path:
        """The local folder a base path stands for."""
        root = self.served_root.rstrip("/")
        if root and (served == root or served.startswith(root + "/")):
            return self.local_root / served[len(root) :].lstrip("/")
        path = Path(served)
        return path if path.is_absolute() else config_dir / path


def mapping_for(config: ServingConfig) -> PathMapping:
    return PathMapping(config.models_config_base_path, Path(config.model_repository))


def entries_to_text(entries: list[ModelEntry], mapping: PathMapping) -> str:
    """Render entries as a `model_config_list` text proto for `models.config`."""

    server_config = model_server_config_pb2.ModelServerConfig()
    for entry in entries:
        proto = server_config.model_config_list.config.add()
        proto.name = entry.name
        proto.base_path = mapping.to_served(entry.base_path)
        proto.model_platform = "tensorflow"
        _policy_to_proto(entry.policy, proto.model_version_policy)
        for label, version in entry.labels:
            proto.version_labels[label] = version
        if entry.logging is not None:
            collector = proto.logging_config.log_collector_config
            collector.type = "file"
            collector.filename_prefix = entry.logging.filename_prefix
            proto.logging_config.sampling_config.sampling_rate = entry.logging.sampling_rate
    return text_format.MessageToString(server_config)


def _logging_from_proto(proto: Any, name: str, source: str) -> LoggingSpec | None:
    """A model's `logging_config` (TF Serving's LoggingConfig), checked; None when absent."""
    if not proto.HasField("logging_config"):
        return None
    collector = proto.logging_config.log_collector_config
    rate = proto.logging_config.sampling_config.sampling_rate
    if collector.type not in ("", "file"):
        raise RepositoryError(
            f"{source}: model {name!r}: log collector type {collector.type!r} is not supported "
            '(use "file": TFRecord files of PredictionLog)'
        )
    if not collector.filename_prefix:
        raise RepositoryError(f"{source}: model {name!r}: logging_config needs filename_prefix")
    if not 0.0 <= rate <= 1.0:
        raise RepositoryError(f"{source}: model {name!r}: sampling_rate must be in [0, 1]")
    return LoggingSpec(collector.filename_prefix, float(rate))


def entries_from_text(
    text: str, config_dir: Path, mapping: PathMapping, source: str = "models.config"
) -> list[ModelEntry]:
    """Parse a `model_config_list` text proto into entries with local base paths."""

    server_config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, server_config)
    except text_format.ParseError as exc:
        raise RepositoryError(f"{source} is not a valid models.config text proto: {exc}") from None
    return entries_from_proto(server_config, config_dir, mapping, source)


def entries_from_proto(
    server_config: Any, config_dir: Path, mapping: PathMapping, source: str
) -> list[ModelEntry]:
    """Entries from a ModelServerConfig proto (the file's or a HandleReloadConfigRequest's)."""
    if server_config.WhichOneof("config") != "model_config_list":
        raise RepositoryError(f"{source}: only model_config_list is supported")
    entries = []
    for proto in server_config.model_config_list.config:
        name = check_model_name(proto.name)
        if proto.model_platform not in ("", "tensorflow"):
            raise RepositoryError(f"{source}: model {name!r} has unsupported platform")
        base = mapping.to_local(proto.base_path, config_dir)
        labels = tuple(sorted(proto.version_labels.items()))
        policy = _policy_from_proto(proto.model_version_policy)
        logging_spec = _logging_from_proto(proto, name, source)
        entries.append(ModelEntry(name, base, policy, labels, logging_spec))
    return entries


def read_models_config(path: Path, mapping: PathMapping) -> list[ModelEntry]:
    """Entries of a models.config file; raise RepositoryError when missing or malformed."""
    if not path.is_file():
        raise RepositoryError(f"models.config not found: {path}")
    return entries_from_text(path.read_text(encoding="utf-8"), path.parent, mapping, str(path))


def entries_for_repository(repository: Path, policy: VersionPolicyConfig) -> list[ModelEntry]:
    """One entry per model folder of a repository, all with the same version policy."""
    if not repository.is_dir():
        raise RepositoryError(f"model repository not found: {repository} (export a model first)")
    return [ModelEntry(name, repository / name, policy) for name in list_models(repository)]


def update_models_config(
    path: Path,
    name: str,
    base_path: Path,
    policy: VersionPolicyConfig,
    labels: dict[str, int] | None = None,
    mapping: PathMapping | None = None,
) -> list[ModelEntry]:
    """Add or update one model in `path` (created if absent), keeping the other models as they
    are and merging `labels` into the model's existing labels; write atomically."""
    mapping = mapping or PathMapping("", base_path.parent)
    entries = read_models_config(path, mapping) if path.is_file() else []
    old = next((e for e in entries if e.name == name), None)
    merged = dict(old.labels) if old else {}
    merged.update(labels or {})
    kept = old.logging if old else None  # a re-export keeps the model's prediction logging
    entry = ModelEntry(name, base_path, policy, tuple(sorted(merged.items())), kept)
    entries = [e for e in entries if e.name != name] + [entry]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(entries_to_text(entries, mapping), encoding="utf-8")
    os.replace(tmp, path)
    return entries


# -- the one writer of versions and models.config -------------------------------------------


def version_info(version_dir: Path) -> dict[str, Any]:
    """A version's self-description (`assets.extra/kerasops_export.json`), {} when absent."""
    try:
        return json.loads((version_dir / "assets.extra" / INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}


def feature_names(version_dir: Path) -> tuple[str, ...]:
    """The names of a version's input feature columns, in the order of its last axis; () for a
    version that records none (exported before names were kept, or not over feature rows)."""
    names = version_info(version_dir).get(FEATURE_NAMES_KEY)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return ()
    return tuple(names)


def publish_version(
    config: ServingConfig,
    name: str,
    source: Path,
    version: int | None = None,
    labels: Mapping[str, int | None] | None = None,
    info: Mapping[str, Any] | None = None,
    move: bool = False,
) -> int:
    """Publish the SavedModel folder `source` as version `version` (default: latest + 1) of
    model `name`, in one rename, then add the model to models.config with `labels` (a label
    mapped to None points at the new version). Return the version number.

    `info` is merged into the version's self-description. With `move`, `source` (a folder of
    the same filesystem) is renamed into place instead of copied. A poller never sees half a
    version; a publisher killed mid-copy leaves only a `.publish-*` folder, removed next time.
    Raises RepositoryError when `version` already exists.
    """
    check_model_name(name)
    base = Path(config.model_repository) / name
    base.mkdir(parents=True, exist_ok=True)
    for leftover in [*base.glob(".publish-*"), *base.glob(".withdrawn-*")]:
        shutil.rmtree(leftover, ignore_errors=True)
    existing = list_versions(base)
    number = version if version is not None else (existing[-1] + 1 if existing else 1)
    if number < 1 or number in existing:
        raise RepositoryError(
            f"version {number} of {name} already exists in {base}; pick another or omit --version"
            if number >= 1
            else f"version must be a positive integer, got {number}"
        )
    staging = base / f".publish-{number}-{uuid.uuid4().hex[:8]}"
    try:
        shutil.move(source, staging) if move else shutil.copytree(source, staging)
        described = {**version_info(staging), **(info or {})}
        described.update(model_name=name, version=number, published_at=time.time())
        (staging / "assets.extra").mkdir(exist_ok=True)
        text = json.dumps(described, indent=2, default=str) + "\n"
        (staging / "assets.extra" / INFO_FILE).write_text(text)
        os.rename(staging, base / str(number))  # atomic: a poller never sees half a version
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    set_labels(config, name, {label: target or number for label, target in (labels or {}).items()})
    return number


def set_labels(config: ServingConfig, name: str, labels: Mapping[str, int]) -> None:
    """Add or update model `name` in models.config (its policy from `config`) and point
    `labels` at versions, keeping its other labels and the other models as they are."""
    base = Path(config.model_repository) / name
    update_models_config(
        Path(config.models_config),
        name,
        base,
        config.version_policy,
        dict(labels),
        mapping_for(config),
    )


def withdraw_version(config: ServingConfig, name: str, version: int) -> None:
    """Take a version away (renamed aside, then deleted): a poller falls back to the others."""
    target = Path(config.model_repository) / name / str(version)
    if target.exists():
        retired = target.with_name(f".withdrawn-{version}-{uuid.uuid4().hex[:8]}")
        os.rename(target, retired)
        shutil.rmtree(retired, ignore_errors=True)


def restore_models_config(config: ServingConfig, text: str | None) -> None:
    """Put models.config back as `text` (None: as absent), atomically."""
    path = Path(config.models_config)
    if text is None:
        path.unlink(missing_ok=True)
        return
    if path.is_file() and path.read_text() == text:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.restore")
    tmp.write_text(text)
    os.replace(tmp, path)
