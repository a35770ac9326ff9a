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
