"""A user's own data in one step: `kerasops data add PATH --name N --source S` versions the
files and writes their params.yaml entry, with the keys the files tell inferred and checked;
params.yaml keeps its comments; a mismatch is one line with nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kerasops.config import load_yaml
from kerasops.data.describe import INFER, suggest_entry
from kerasops.errors import KerasopsError
from kerasops.pipelines.cli import main
from kerasops.pipelines.cli.data import USER_SOURCES
from kerasops.pipelines.config import load_params
from kerasops.pipelines.config.edit import entry_yaml, write_dataset_entry
from tests import services
from tests.conftest import write_params


def image_folder(root: Path, size=(12, 10), mode="L") -> Path:
    rng = np.random.default_rng(0)
    for label in ("circle", "square"):
        (root / label).mkdir(parents=True)
        for i in range(6):
            pixels = (rng.random((*size, 3)) * 255).astype("uint8")
            Image.fromarray(pixels).convert(mode).save(root / label / f"{i}.png")
    return root


def test_the_cli_lists_exactly_the_sources_that_read_user_files():
    assert set(USER_SOURCES) == set(INFER)


def test_image_folders_give_their_size_and_colour_mode(tmp_path):
    folder = image_folder(tmp_path / "shapes")
    entry = suggest_entry("image_folder", folder, "shapes", {})
    assert entry == {
        "source": "image_folder",
        "path": "shapes",
        "image_size": [12, 10],
        "color_mode": "grayscale",
    }
    rgb = image_folder(tmp_path / "photos", mode="RGB")
    assert suggest_entry("image_folder", rgb, "photos", {"val_fraction": 0.2}) == {
        "source": "image_folder",
        "path": "photos",
        "image_size": [12, 10],
        "color_mode": "rgb",
        "val_fraction": 0.2,
    }


def test_csv_sources_read_their_columns(tmp_path):
    (tmp_path / "houses").mkdir()
    rows = "\n".join(f"{i},{i * 2.5},{100 + i * 3.25}" for i in range(40))
    (tmp_path / "houses" / "sales.csv").write_text("rooms,area,label\n" + rows + "\n")
    tabular = suggest_entry("tabular_csv", tmp_path / "houses", "houses", {})
    assert tabular["path"] == "houses/sales.csv" and tabular["task"] == "regression"
    (tmp_path / "flowers").mkdir()
    classes = "\n".join(f"{i * 0.1},{i % 3}" for i in range(40))
    (tmp_path / "flowers" / "iris.csv").write_text("petal,label\n" + classes + "\n")
    assert suggest_entry("tabular_csv", tmp_path / "flowers", "flowers", {})["task"] == (
        "classification"
    )
    (tmp_path / "sales").mkdir()
    series = "\n".join(f"2020-01-{i + 1:02d},{i * 1.5}" for i in range(28))
    (tmp_path / "sales" / "daily.csv").write_text("date,units\n" + series + "\n")
    entry = suggest_entry("timeseries_csv", tmp_path / "sales", "sales", {"window": 7})
    assert entry["value_column"] == "units" and entry["time_column"] == "date"
    assert entry["window"] == 7


@pytest.mark.parametrize(
    "source, files, message",
    [
        ("image_folder", {"only/one.png": None}, "one subfolder of images per class"),
        ("text_csv", {"reviews.csv": "body,stars\nfine,5\n"}, "needs columns `text` and `label`"),
        ("tabular_csv", {"a.csv": "x,y\n1,2\n"}, "no column 'label': pass label_column"),
        ("timeseries_csv", {"s.csv": "a,b\n1,2\n3,4\n"}, "pass value_column"),
        ("text_corpus", {"notes.md": "# not text"}, "holds no .txt file"),
        ("keras_mnist", {}, "is a built-in source"),
    ],
)
def test_files_that_do_not_fit_their_source_are_one_clear_error(tmp_path, source, files, message):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            Image.new("L", (4, 4)).save(folder / name)
        else:
            (folder / name).write_text(text)
    with pytest.raises(KerasopsError, match=message):
        suggest_entry(source, folder, "mine", {})


def test_the_entry_is_written_into_params_yaml_keeping_its_comments(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(
        "# my project\n"
        "tracking:\n"
        '  experiment: "mine"   # the MLflow experiment\n'
        "datasets:\n"
        "  digits:\n"
        "    seed: 7            # another split\n"
        "\n"
        "pipeline:\n"
        "  validation:\n"
        "    drift_fail_psi: null\n"
    )
    entry = {"source": "image_folder", "path": "shapes", "image_size": [12, 10]}
    write_dataset_entry(path, "shapes", entry)
    text = path.read_text()
    assert "# my project" in text and '"mine"   # the MLflow experiment' in text
    assert "seed: 7            # another split\n  shapes:\n" in text  # after, not below a gap
    assert "image_size: [12, 10]" in text and "drift_fail_psi: null" in text
    assert load_params(path).dataset("shapes").image_size == (12, 10)
    assert entry_yaml("shapes", entry).startswith("shapes:\n  source: image_folder\n")


def test_an_entry_that_does_not_type_check_leaves_params_yaml_as_it_was(tmp_path):
    path = write_params(tmp_path)
    before = path.read_text()
    with pytest.raises(KerasopsError, match="image_size"):
        write_dataset_entry(path, "bad", {"source": "image_folder", "path": "x", "image_size": [0]})
    assert path.read_text() == before and not list(tmp_path.glob(".params.yaml.*"))


@pytest.mark.slow
def dvc_project(tmp_path: Path, monkeypatch) -> Path:  # noqa: ANN001
    """A git repository with params.yaml and DVC set up (a local remote), as working directory."""
    project = tmp_path / "project"
    project.mkdir()
    write_params(project)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid"}
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t.invalid")
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "p"]):
        subprocess.run(command, cwd=project, env=env, check=True, capture_output=True)
    monkeypatch.chdir(project)
    monkeypatch.setenv("KERASOPS_DVC_REMOTE", str(tmp_path / "remote"))
    assert main(["data", "setup"]) == 0
    return project


def test_data_add_versions_the_folder_and_declares_it(tmp_path, capsys, monkeypatch):
    """From a raw image folder to a declared, versioned dataset that trains (through the CLI)."""
    project = dvc_project(tmp_path, monkeypatch)
    source = image_folder(tmp_path / "shapes", size=(8, 8))
    argv = ["data", "add", str(source), "--name", "shapes", "--source", "image_folder"]
    assert main([*argv, "--no-write"]) == 0
    printed = capsys.readouterr().out
    assert "shapes:\n  source: image_folder\n  path: shapes\n  image_size: [8, 8]" in printed
    assert "shapes" not in (load_yaml((project / "params.yaml").read_text()) or {}).get(
        "datasets", {}
    )
    assert main([*argv, "--set", "val_fraction=0.25"]) == 0
    assert "params.yaml: datasets.shapes" in capsys.readouterr().out
    declared = load_yaml((project / "params.yaml").read_text())["datasets"]["shapes"]
    assert declared == {
        "source": "image_folder",
        "path": "shapes",
        "image_size": [8, 8],
        "color_mode": "grayscale",
        "val_fraction": 0.25,
    }
    assert (project / "data" / "raw" / "shapes.dvc").is_file()
    assert main(["prepare", "shapes"]) == 0
    assert "prepared shapes (image, classification)" in capsys.readouterr().out
    assert main([*argv[:-2], "--source", "text_csv"]) == 2  # does not fit: nothing changes
    assert "one CSV of text and label columns" in capsys.readouterr().err


def drawn_shapes(root: Path, count: int = 40, size: int = 16) -> Path:
    """Outlined circles and filled squares at random places and sizes, as RGB photos."""
    from PIL import ImageDraw

    rng = np.random.default_rng(1)
    for label in ("circle", "square"):
        (root / label).mkdir(parents=True)
        for i in range(count):
            image = Image.new("RGB", (size, size), (0, 0, 0))
            side = int(rng.integers(7, 12))
            x, y = (int(v) for v in rng.integers(0, size - side, 2))
            draw = ImageDraw.Draw(image)
            if label == "circle":
                draw.ellipse((x, y, x + side, y + side), outline=(255, 255, 255), width=2)
            else:
                draw.rectangle((x, y, x + side, y + side), fill=(255, 255, 255))
            image.save(root / label / f"{i}.png")
    return root


@pytest.mark.slow
def test_from_a_raw_folder_to_a_served_prediction_of_a_png(tmp_path, capsys, monkeypatch):
    """data add -> train -> export -> serve -> `kerasops predict --input photo.png`, all by the
    CLI; the answer names the user's own classes."""
    import json

    dvc_project(tmp_path, monkeypatch)
    source = drawn_shapes(tmp_path / "photos", count=120)
    argv = ["data", "add", str(source), "--name", "shapes", "--source", "image_folder"]
    assert main([*argv, "--set", "color_mode=grayscale"]) == 0
    train = ["train", "cnn", "--dataset", "shapes", "--set", "epochs=30", "--set", "batch_size=16"]
    assert main(train) == 0
    assert main(["export", "artifacts/runs/cnn-shapes", "--name", "shapes"]) == 0
    capsys.readouterr()

    rest, grpc = services.free_port(), services.free_port()
    kerasops = [sys.executable, "-m", "kerasops"]
    serve = [*kerasops, "serve", "--rest-port", str(rest), "--grpc-port", str(grpc)]
    photos = drawn_shapes(tmp_path / "new", count=6, size=24)  # another size, RGB
    inputs = sorted(str(p) for p in photos.rglob("*.png"))
    health = f"http://127.0.0.1:{rest}/v1/models/shapes"
    with services.server(serve, health, tmp_path / "serve.log"):
        predict = [*kerasops, "predict", "shapes", "--input", *inputs]
        predict += ["--url", f"http://127.0.0.1:{rest}"]
        done = subprocess.run(predict, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == 12
    assert all(set(a["probabilities"]) == {"circle", "square"} for a in answers)
    truth = [Path(p).parent.name for p in inputs]
    right = sum(a["class"] == t for a, t in zip(answers, truth, strict=True))
    assert right >= 9, answers  # 12 new photos at another size than trained on
