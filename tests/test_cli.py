"""The CLI: each user mistake is one `error:` line and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main
from tests.conftest import write_params


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def bad_image_folder(root: Path) -> Path:
    folder = root / "photos"
    (folder / "cats").mkdir(parents=True)
    (folder / "cats" / "notes.txt").write_text("not an image")
    return folder


@pytest.mark.parametrize(
    "argv, datasets, message",
    [
        (["train", "resnet9000", "--dataset", "digits"], {}, "unknown model 'resnet9000'"),
        (["train", "cnn", "--dataset", "digits", "--preset", "cnn_xl"], {}, "unknown preset"),
        (["train", "cnn", "--dataset", "nope"], {}, "unknown dataset 'nope'"),
        (["train", "cnn", "--dataset", "digits", "--set", "filterz=[8]"], {}, "unknown key"),
        (["train", "cnn", "--dataset", "digits", "--set", "epochs=ten"], {}, "expected an integer"),
        (
            ["train", "cnn", "--dataset", "mine"],
            {"mine": {"source": "image_folder", "path": "missing/folder"}},
            "missing/folder",
        ),
        (
            ["train", "cnn", "--dataset", "mine"],
            {"mine": {"source": "image_folder", "path": "empty"}},
            "empty",
        ),
        (
            ["train", "rnn", "--dataset", "reviews"],
            {"reviews": {"source": "text_csv", "path": "reviews.csv"}},
            "label",
        ),
        (
            ["train", "cnn", "--dataset", "photos"],
            {"photos": {"source": "image_folder", "path": "photos"}},
            "notes.txt",
        ),
        (["train", "cnn", "--dataset", "bbc_news"], {}, "takes image data, not text data"),
    ],
    ids=[
        "model",
        "preset",
        "dataset",
        "key",
        "type",
        "missing-folder",
        "empty-folder",
        "csv-columns",
        "non-image",
        "wrong-data-kind",
    ],
)
def test_bad_input_is_one_line_and_exit_2(project, capsys, argv, datasets, message):
    (project / "empty").mkdir()
    (project / "reviews.csv").write_text("text,sentiment\ngreat film,pos\n")
    bad_image_folder(project)
    write_params(project, datasets=datasets)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]
    assert "Traceback" not in err


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
