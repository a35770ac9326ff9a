"""Changes written into params.yaml by a command (`kerasops data add --source`), keeping the
file's comments, order and formatting (a round trip through ruamel.yaml), and checked by
loading the whole file again: an entry that does not type-check leaves the file as it was."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.tokens import CommentToken

from kerasops.pipelines.config.params import load_params


def entry_yaml(name: str, entry: Mapping[str, Any]) -> str:
    """`name: {...}` as it would appear under `datasets:`."""
    stream = io.StringIO()
    round_trip().dump({name: flow_lists(entry)}, stream)
    return stream.getvalue()


def write_dataset_entry(params_path: Path, name: str, entry: Mapping[str, Any]) -> None:
    """Set `datasets.<name>` in params.yaml (created if absent) to `entry`; raise the loader's
    ConfigError or DataError, with the file unchanged, when the result does not type-check."""
    yaml = round_trip()
    original = params_path.read_text() if params_path.is_file() else ""
    document = yaml.load(original) or CommentedMap()
    if document.get("datasets") is None:
        document["datasets"] = CommentedMap()
    datasets = document["datasets"]
    tail = trailing_lines(datasets) if name not in datasets else ""
    datasets[name] = flow_lists(entry)
    if tail:  # the blank lines or comments that closed the section move below the new entry
        token = CommentToken("\n" + tail, CommentMark(0), None)
        datasets[name].ca.items[list(entry)[-1]] = [None, None, token, None]
    write_checked(params_path, yaml, document)


def write_checked(params_path: Path, yaml: YAML, document: CommentedMap) -> None:
    """Write `document` as params.yaml beside it, load it as params (raising on a mistake,
    leaving the file as it was), then swap it in with one rename."""
    stream = io.StringIO()
    yaml.dump(document, stream)
    staged = params_path.with_name(f".{params_path.name}.{os.getpid()}.new")
    staged.write_text(stream.getvalue())
    try:
        load_params(staged)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    os.replace(staged, params_path)


def round_trip() -> YAML:
    yaml = YAML()  # round-trip mode: comments and key order survive
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100
    yaml.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return yaml


def trailing_lines(mapping: CommentedMap) -> str:
    """Take the lines (blank or comments) written after the mapping's last item, leaving that
    item's own inline comment where it is; "" when there are none. They belong to the deepest
    last key, whose comment token holds the rest of its line, then those lines."""
    while mapping:
        last = list(mapping)[-1]
        if isinstance(mapping[last], CommentedMap) and mapping[last]:
            mapping = mapping[last]
            continue
        comment = mapping.ca.items.get(last)
        if not comment or comment[2] is None:
            return ""
        own, newline, after = comment[2].value.partition("\n")
        comment[2].value = own + newline
        return after
    return ""


def flow_lists(entry: Mapping[str, Any]) -> CommentedMap:
    """The entry with lists written inline (`image_size: [64, 64]`), as params.yaml writes them."""
    mapped = CommentedMap()
    for key, value in entry.items():
        if isinstance(value, list | tuple):
            value = CommentedSeq(value)
            value.fa.set_flow_style()
        mapped[key] = value
    return mapped


def write_model_values(params_path: Path, family: str, values: Mapping[str, Any]) -> None:
    """Set `model.<key>` values as keys of `models.<family>` and `train.<key>` ones under its
    `train:`, in place (comments kept); raise the loader's error, the file unchanged, when the
    result does not type-check."""
    yaml = round_trip()
    original = params_path.read_text() if params_path.is_file() else ""
    document = yaml.load(original) or CommentedMap()
    if document.get("models") is None:
        document["models"] = CommentedMap()
    if document["models"].get(family) is None:
        document["models"][family] = CommentedMap()
    section = document["models"][family]
    for key, value in values.items():
        kind, _, name = key.partition(".")
        target = section
        if kind == "train":
            if section.get("train") is None:
                section["train"] = CommentedMap()
            target = section["train"]
        if isinstance(value, list | tuple):
            value = CommentedSeq(value)
            value.fa.set_flow_style()
        target[name] = value
    write_checked(params_path, yaml, document)
