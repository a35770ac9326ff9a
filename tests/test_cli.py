"""The CLI: each user mistake is one `error:` line and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kerasops.pipelines.cli import main
from tests.conftest import write_params

IMAGES = {"source": "image_folder", "image_size": [8, 8]}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def user_files(raw: Path) -> None:
    """Bad user data under data/raw, where relative dataset paths are read."""
    (raw / "empty").mkdir(parents=True)
    (raw / "reviews.csv").write_text("text,sentiment\ngreat film,pos\n")
    (raw / "photos" / "cats").mkdir(parents=True)
    (raw / "photos" / "cats" / "notes.txt").write_text("not an image")


BAD_INPUTS = {
    "model": (["train", "resnet9000", "--dataset", "digits"], {}, "unknown model 'resnet9000'"),
    "preset": (["train", "cnn", "--dataset", "digits", "--preset", "cnn_xl"], {}, "unknown preset"),
    "dataset": (["train", "cnn", "--dataset", "nope"], {}, "unknown dataset 'nope'"),
    "key": (["train", "cnn", "--dataset", "digits", "--set", "filterz=[8]"], {}, "unknown key"),
    "type": (["train", "cnn", "--dataset", "digits", "--set", "epochs=ten"], {}, "an integer"),
    "missing-folder": (
        ["train", "cnn", "--dataset", "mine"],
        {"mine": {**IMAGES, "path": "missing/folder"}},
        "missing/folder does not exist",
    ),
    "empty-folder": (
        ["train", "cnn", "--dataset", "mine"],
        {"mine": {**IMAGES, "path": "empty"}},
        "empty",
    ),
    "csv-columns": (
        ["train", "rnn", "--dataset", "reviews"],
        {"reviews": {"source": "text_csv", "path": "reviews.csv"}},
        "label",
    ),
    "non-image": (
        ["train", "cnn", "--dataset", "photos"],
        {"photos": {**IMAGES, "path": "photos"}},
        "notes.txt",
    ),
    "no-image-size": (
        ["train", "cnn", "--dataset", "mine"],
        {"mine": {"source": "image_folder", "path": "photos"}},
        "image_size is required",
    ),
    "wrong-data-kind": (
        ["train", "cnn", "--dataset", "bbc_news"],
        {},
        "takes image data, not text data",
    ),
}


@pytest.mark.parametrize("argv, datasets, message", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_line_and_exit_2(project, capsys, argv, datasets, message):
    user_files(project / "data" / "raw")
    write_params(project, datasets=datasets)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]
    assert "Traceback" not in err


@pytest.mark.slow
def test_console_script_prints_no_traceback(project):
    script = Path(sys.executable).with_name("kerasops")
    result = subprocess.run(
        [str(script), "train", "nosuchmodel", "--dataset", "digits"],
        capture_output=True,
        text=True,
        cwd=project,
        env={**os.environ},
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown model")
    assert "Traceback" not in result.stderr


def test_list_and_empty_compare(project, capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and "cnn_small" in out and "bbc_news" in out and "sunspots" in out
    code, out, _ = run_cli(capsys, "compare")
    assert code == 0 and "no runs recorded yet" in out


def test_local_prefect_creates_its_home_in_a_fresh_checkout(project, monkeypatch):
    from kerasops.pipelines.config import load_params
    from kerasops.pipelines.flows.local import local_prefect

    for key in ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"):
        monkeypatch.setenv(key, "placeholder")
        monkeypatch.delenv(key)
    assert not (project / "artifacts").exists()
    local_prefect(load_params(project / "params.yaml"))
    assert (project / "artifacts" / "prefect").is_dir()  # Prefect's SQLite database goes here


def test_every_option_has_help_and_the_shell_completes(capsys):
    import argparse

    from kerasops.pipelines.cli import build_parser

    def undocumented(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from undocumented(sub, [*path, name])
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                yield f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}"

    assert list(undocumented(build_parser(), ["kerasops"])) == []
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert "kerasops" in script and "run-pipeline" in script and "--dataset" in script


def test_list_columns_fit_their_content(project, capsys):
    code, out, _ = run_cli(capsys, "list")
    lines = out.splitlines()
    models = lines[1 : lines.index("datasets:")]
    starts = {line.index(line.split()[1], len(line.split()[0])) for line in models}
    assert code == 0 and len(starts) == 1  # every description starts in one column
    assert "language_model" in out and "detection_digits" in out


@pytest.mark.slow
def test_the_terminal_is_quiet_unless_asked(project):
    """No TensorFlow native lines or library INFO logs by default; --verbose shows them."""
    kerasops = str(Path(sys.executable).with_name("kerasops"))
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONPATH")}
    quiet = subprocess.run(
        [kerasops, "prepare", "digits"], cwd=project, env=env, capture_output=True, text=True
    )
    assert quiet.returncode == 0 and "prepared digits" in quiet.stdout
    noise = ("I0000", "E0000", "absl::InitializeLog", "cuInit", "cudart")
    assert not any(marker in quiet.stderr for marker in noise), quiet.stderr
    loud = subprocess.run(
        [kerasops, "--verbose", "prepare", "digits"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert loud.returncode == 0 and any(marker in loud.stderr for marker in noise)


def test_a_run_id_prefix_resolves_as_git_resolves_a_commit(project, capsys):
    import mlflow

    from kerasops.pipelines.config import load_params
    from kerasops.pipelines.tracking import store
    from kerasops.pipelines.tracking.runs import resolve_run_id

    params = load_params(project / "params.yaml")
    store.configure(params)
    ids = []
    while len({i[:1] for i in ids}) == len(ids) or len(ids) < 3:  # two share a first digit
        with mlflow.start_run() as run:
            ids.append(run.info.run_id)
    first = ids[0]
    assert resolve_run_id(params, first[:8]) == first
    assert main(["lineage", first[:8]]) == 0
    assert first in capsys.readouterr().out
    shared = next(i[:1] for i in ids if sum(j[:1] == i[:1] for j in ids) > 1)
    assert main(["lineage", shared]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: run id {shared!r} is ambiguous:") and "give more" in error
    assert main(["lineage", "0123456789abcdef"]) == 2
    assert "no MLflow run '0123456789abcdef'" in capsys.readouterr().err
