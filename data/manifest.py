"""The manifest that describes a prepared dataset: shapes, classes, counts and file hashes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_type_hints

from kerasops.config import coerce
from kerasops.data.errors import DataError
from kerasops.errors import ConfigError

SCHEMA_VERSION = 2  # 2: splits as TFRecord shards (1: whole-split .npz files)


@dataclasses.dataclass(frozen=True)
class Manifest:
    """Everything a trainer needs to know about a prepared dataset without opening its shards."""

    name: str
    source: str
    kind: Literal["image", "text", "timeseries", "tabular", "audio"]
    task: Literal[
        "classification",
        "regression",
        "language_modeling",
        "translation",
        "detection",
        "segmentation",
    ]
    input_shape: tuple[int, ...]  # per example: (8, 8, 1), () for one string, (window, 1)
    input_dtype: Literal["float32", "string"]
    target_shape: tuple[int, ...]  # () class index, (horizon,) forecast, (objects, 5) boxes
    classes: tuple[str, ...]
    splits: dict[str, int]
    class_counts: dict[str, dict[str, int]]
    stats: dict[str, float]
    files: dict[str, str]  # shard file name -> sha256
    content_hash: str
    config: dict
    # how each example's x and y are stored: image (PNG/JPEG), float32, int32 or string
    encodings: dict[str, Literal["image", "float32", "int32", "string"]]
    shards: dict[str, dict[str, int]]  # split -> shard file name -> examples, in read order
    skipped: tuple[str, ...] = ()  # unreadable source files left out (skip_corrupt: true)
    # a table's feature column names, in the order of x's last axis; () for other kinds
    feature_names: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that `from_dict` turns back into an equal manifest."""
        values = dataclasses.asdict(self)
        for key in ("input_shape", "target_shape", "classes", "skipped", "feature_names"):
            values[key] = list(values[key])
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Manifest:
        """Build a manifest from a mapping; raise ConfigError naming a missing or bad key."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"manifest: unknown key {unknown[0]}")
        required = {n for n, f in fields.items() if f.default is dataclasses.MISSING}
        missing = sorted(required - set(values))
        if missing:
            raise ConfigError(f"manifest: missing key {missing[0]}")
        hints = get_type_hints(cls)
        return cls(**{k: coerce(v, hints[k], k) for k, v in values.items()})

    def write(self, path: Path) -> None:
        """Write the manifest as sorted, indented JSON (byte-identical for equal manifests)."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        Path(path).write_text(text + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Read a manifest; raise DataError when it is missing or not a valid manifest."""
        path = Path(path)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
            version = values.get("schema_version", 1) if isinstance(values, dict) else None
            if version is not None and version != SCHEMA_VERSION:
                raise DataError(
                    f"{path} has schema version {version}, this kerasops reads "
                    f"{SCHEMA_VERSION}; prepare the dataset again"
                )
            manifest = cls.from_dict(values)
        except FileNotFoundError:
            raise DataError(f"{path} does not exist; prepare the dataset first") from None
        except (json.JSONDecodeError, ConfigError, TypeError, AttributeError) as exc:
            raise DataError(
                f"{path} is not a valid manifest ({exc}); prepare the dataset again"
            ) from None
        if manifest.schema_version != SCHEMA_VERSION:
            raise DataError(
                f"{path} has schema version {manifest.schema_version}, this kerasops reads "
                f"{SCHEMA_VERSION}; prepare the dataset again"
            )
        return manifest


def content_hash(files: Mapping[str, str]) -> str:
    """The sha256 over the sorted file hashes, one per line: one id for the whole dataset."""
    joined = "\n".join(sorted(files.values()))
    return hashlib.sha256(joined.encode("ascii")).hexdigest()
