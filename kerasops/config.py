"""Strict, typed configuration: frozen dataclasses that reject unknown keys and wrong types.

Every config in kerasops (model architectures, training, datasets, serving, params.yaml itself)
is a frozen dataclass that derives from `StrictConfig`. `from_dict` names the offending key on
any mistake, so a typo in `params.yaml` or `--set` is an error, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal, Self, get_args, get_origin, get_type_hints

import yaml

from kerasops.errors import ConfigError

# A float in exponent notation without a dot, which YAML 1.1 leaves a string.
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_BOOL = "tag:yaml.org,2002:bool"


class ParamsLoader(yaml.SafeLoader):
    """YAML as DVC and ruamel.yaml read params.yaml (YAML 1.2): only true/false are booleans.
    PyYAML's YAML 1.1 also reads yes/no/on/off so, which `dvc exp run --set-param` (it writes
    the file back without their quotes) would turn a list of spoken words into booleans."""


ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ParamsLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    """`text` as params.yaml and `--set` values are read (ParamsLoader)."""
    return yaml.load(text, Loader=ParamsLoader)  # a SafeLoader with YAML 1.2 booleans


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` checked (and losslessly converted) to the annotation `tp`, or raise."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        choices = ", ".join(repr(a) for a in get_args(tp))
        raise ConfigError(f"{key}: {value!r} is not one of {choices}")
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            pairs = enumerate(zip(args, value, strict=True))
            return tuple(coerce(v, a, f"{key}[{i}]") for i, (a, v) in pairs)
        item = args[0] if args else Any
        return tuple(coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        args = get_args(tp)
        item = args[1] if len(args) == 2 else Any
        return {k: coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, StrictConfig):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return tp.from_dict(value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            return float(value)  # `1e-3`: YAML 1.1 (PyYAML) reads it as a string
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class StrictConfig:
    """Base for frozen configs: `from_dict` rejects unknown keys and wrong types by name."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None = None, prefix: str = "") -> Self:
        """Build the config from a mapping; raise ConfigError naming any bad key."""
        values = dict(values or {})
        hints = get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown key {prefix}{unknown[0]!s} for {cls.__name__}; "
                f"valid keys: {', '.join(sorted(known))}"
            )
        kwargs = {k: coerce(v, hints[k], f"{prefix}{k}") for k, v in values.items()}
        try:
            config = cls(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"{cls.__name__}: {exc}") from None
        config.validate()
        return config

    def validate(self) -> None:
        """Check value ranges; subclasses raise ConfigError with the key's name."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that `from_dict` turns back into an equal config."""
        return _plain(dataclasses.asdict(self))

    def replace(self, **changes: Any) -> Self:
        return type(self).from_dict({**self.to_dict(), **changes})


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def parse_override(text: str) -> tuple[str, Any]:
    """Split a `--set key=value` override; the value is parsed as YAML (`3`, `0.1`, `[8, 8]`)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: the key is empty")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless `condition` holds."""
    if not condition:
        raise ConfigError(message)
