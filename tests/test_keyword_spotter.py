"""The keyword spotter: the espeak-ng `speech_commands` set and the `audio_folder` source, the bad
inputs a user sees in one line, the builder with its in-graph log-mel front end, the metrics
against the majority class, training that beats it on a voice never heard, and its export
answering REST and gRPC predicts on the embedded server."""

from __future__ import annotations

import hashlib
import json
import wave
from pathlib import Path

import numpy as np
import pytest

from kerasops.data import DataError, load_prepared, prepare_dataset
from kerasops.data.audio import read_clip
from kerasops.errors import ConfigError
from kerasops.models import build_model, preset_values
from kerasops.models.keyword_spotter.metrics import majority_macro_f1
from tests.conftest import write_params
from tests.harness import run_builder_test

AUDIO = {
    "kind": "audio",
    "task": "classification",
    "shape": [16000],
    "num_outputs": 4,
    "sample_rate": 16000,
}
WORDS = ["yes", "no", "up", "down"]
SMALL_SET = {
    "source": "speech_commands",
    "words": ["yes", "no", "go"],
    "voices": ["en+m1", "en+f3"],
    "unseen_voice": "en-us+m7",
    "takes": 2,
    "val_fraction": 0.25,
    "test_fraction": 0.25,
}
TRAIN_SET = {
    "source": "speech_commands",
    "words": WORDS,
    "voices": ["en+m1", "en+f1", "en-us+m2", "en-gb-scotland+m4"],
    "unseen_voice": "en-us+m7",
    "takes": 6,
}


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.round(np.asarray(samples) * 32767).astype("<i2").tobytes())
    return path


def tone(hz: float, seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return 0.5 * np.sin(2 * np.pi * hz * t)


def write_folder(folder: Path) -> Path:
    """Two classes of short tones: `low` (300 Hz) and `high` (2 kHz), four clips each."""
    for name, hz in (("low", 300.0), ("high", 2000.0)):
        for i in range(4):
            write_wav(folder / name / f"{i}.wav", tone(hz * (1 + 0.02 * i), 0.5))
    return folder


# --- data -------------------------------------------------------------------------------------


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.wav"))
    }


@pytest.mark.slow  # spawns espeak-ng
def test_speech_commands_is_seeded_16khz_one_second_clips_with_one_voice_held_out(tmp_path):
    manifest = prepare_dataset("speech", SMALL_SET, tmp_path / "raw", tmp_path / "prepared")
    assert (manifest.kind, manifest.task) == ("audio", "classification")
    assert manifest.input_shape == (16000,) and manifest.classes == ("go", "no", "yes")
    assert manifest.splits["unseen_voice"] == 3 * 2  # every word, every take of the held-out voice
    assert sum(manifest.splits[s] for s in ("train", "val", "test")) == 3 * 2 * 2
    assert manifest.class_counts["unseen_voice"] == {"go": 2, "no": 2, "yes": 2}
    raw = tmp_path / "raw" / "speech"
    held_out = sorted(p.name for p in (raw / "unseen_voice").rglob("*.wav"))
    heard = sorted(p.name for p in (raw / "voices").rglob("*.wav"))
    assert held_out and all(n.startswith("en-us_m7-") for n in held_out)
    assert not any(n.startswith("en-us_m7-") for n in heard)  # no training clip in that voice
    with wave.open(str(next((raw / "voices" / "yes").glob("*.wav"))), "rb") as clip:
        assert (clip.getframerate(), clip.getnchannels(), clip.getnframes()) == (16000, 1, 16000)

    prepared = load_prepared("speech", tmp_path / "prepared")
    unseen = prepared.splits["unseen_voice"]
    assert np.asarray(unseen.x).shape == (6, 16000) and np.abs(np.asarray(unseen.x)).max() <= 1.0
    from kerasops.data.validation import validate_prepared

    report = validate_prepared(prepared, prepared)
    assert all(c.status == "pass" for c in report.checks), [c.message for c in report.checks]

    again = prepare_dataset("speech", SMALL_SET, tmp_path / "raw2", tmp_path / "prepared2")
    assert _digest(tmp_path / "raw2" / "speech") == _digest(raw)  # byte-identical under a seed
    assert again.content_hash == manifest.content_hash


def test_missing_espeak_ng_is_one_line_naming_the_fix(tmp_path, capsys, monkeypatch):
    from kerasops.pipelines.cli import main

    write_params(tmp_path, datasets={"speech": SMALL_SET})
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert main(["--params", str(tmp_path / "params.yaml"), "prepare", "speech"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: espeak-ng is not installed")
    assert "apt-get install espeak-ng" in err
    assert not (tmp_path / "data" / "prepared" / "speech").exists()


@pytest.mark.slow  # spawns espeak-ng
def test_an_unknown_voice_is_one_line_naming_it(tmp_path, capsys):
    from kerasops.pipelines.cli import main

    write_params(tmp_path, datasets={"speech": {**SMALL_SET, "voices": ["en+m1", "nonsense"]}})
    assert main(["--params", str(tmp_path / "params.yaml"), "prepare", "speech"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "in voice 'nonsense'" in err, err
    assert "check the voice name" in err
    assert not (tmp_path / "data" / "prepared" / "speech").exists()


def test_a_clip_of_another_rate_is_resampled_to_16khz(tmp_path):
    path = write_wav(tmp_path / "a.wav", tone(440.0, 0.5, rate=8000), rate=8000)
    clip = read_clip(path, 16000, 1.0)
    assert clip.shape == (16000,) and clip.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(clip[:8000]))
    assert abs(np.argmax(spectrum) * 16000 / 8000 - 440.0) <= 2.0  # the same pitch
    assert np.all(clip[8000:] == 0.0)  # padded with silence to the window
    stereo = np.repeat(tone(440.0, 0.25), 2)  # interleaved left/right frames
    assert read_clip(write_wav(tmp_path / "s.wav", stereo, channels=2), 16000, 1.0).shape == (
        16000,
    )


def test_audio_folder_with_a_held_out_folder_prepares_an_unseen_voice_split(tmp_path):
    folder = write_folder(tmp_path / "own")
    write_folder(tmp_path / "speaker_b")
    (tmp_path / "speaker_b" / "high" / "0.wav").unlink()
    config = {
        "source": "audio_folder",
        "path": "own",
        "unseen_voice_path": "speaker_b",
        "val_fraction": 0.25,
        "test_fraction": 0.25,
    }
    manifest = prepare_dataset("own", config, tmp_path, tmp_path / "prepared")
    assert manifest.classes == ("high", "low") and manifest.splits["unseen_voice"] == 7
    assert manifest.stats["sample_rate"] == 16000.0
    unseen = load_prepared("own", tmp_path / "prepared").splits["unseen_voice"]
    assert (
        np.asarray(unseen.x).shape == (7, 16000)
        and sorted(np.asarray(unseen.y)) == [0] * 3 + [1] * 4
    )
    write_wav(tmp_path / "speaker_b" / "mid" / "0.wav", tone(900.0, 0.5))
    with pytest.raises(
        DataError, match=r"speaker_b has class folders \['mid'\] that .*own does not"
    ):
        prepare_dataset("own", config, tmp_path, tmp_path / "prepared")
    assert folder.is_dir()


def _long_clip(folder: Path) -> str:
    write_wav(folder / "low" / "1.wav", tone(300.0, 1.5))
    return "1.wav is 1.50 s long, longer than the 1 s window"


def _corrupt(folder: Path) -> str:
    (folder / "high" / "2.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    return "2.wav cannot be read as a PCM WAV file"


def _not_wav(folder: Path) -> str:
    (folder / "high" / "notes.mp3").write_bytes(b"ID3\x03\x00")
    return "notes.mp3 is not a .wav file"


@pytest.mark.parametrize("spoil", [_long_clip, _corrupt, _not_wav])
def test_bad_clips_are_one_line_naming_the_file_and_change_nothing(tmp_path, capsys, spoil):
    from kerasops.pipelines.cli import main

    folder = write_folder(tmp_path / "data" / "raw" / "own")
    write_params(tmp_path, datasets={"own": {"source": "audio_folder", "path": "own"}})
    args = ["--params", str(tmp_path / "params.yaml"), "prepare", "own"]
    assert main(args) == 0
    manifest = tmp_path / "data" / "prepared" / "own" / "manifest.json"
    before = manifest.read_text()
    capsys.readouterr()
    message = spoil(folder)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert manifest.read_text() == before  # the previous version stays


def test_data_add_suggests_the_audio_folder_entry(tmp_path):
    from kerasops.data.describe import suggest_entry

    folder = write_folder(tmp_path / "own")
    entry = suggest_entry("audio_folder", folder, "own", {})
    assert entry == {
        "source": "audio_folder",
        "path": "own",
        "sample_rate": 16000,
        "clip_seconds": 1.0,
    }
    with pytest.raises(ConfigError, match="unseen_voice 'en\\+m1' is also in voices"):
        prepare_dataset("x", {**SMALL_SET, "unseen_voice": "en+m1"}, tmp_path, tmp_path / "p")
    with pytest.raises(DataError, match="needs one subfolder of .wav clips per class"):
        suggest_entry("audio_folder", folder / "low", "own/low", {})


# --- model and metrics --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "preset",
    ["keyword_spotter_tiny", pytest.param("keyword_spotter_bigru_small", marks=pytest.mark.slow)],
)
def test_keyword_spotter_through_the_builder_harness(tmp_path, preset):
    audio = np.random.default_rng(0).normal(0, 0.1, (2, 16000)).astype("float32")
    config = {**preset_values("keyword_spotter", preset), "inputs": AUDIO}
    model = run_builder_test("keyword_spotter", config, audio, (2, 4), tmp_path)
    assert model.inputs[0].name == "audio" and model.output_names == ["probabilities"]
    assert model.get_layer("mel_spectrogram").__class__.__name__ == "MelSpectrogram"
    one = model.predict(audio[:1], verbose=0)
    np.testing.assert_allclose(one, model.predict(audio, verbose=0)[:1], atol=1e-5)  # per clip


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({**AUDIO, "kind": "image", "shape": [8, 8, 1]}, "takes audio data, not image"),
        ({**AUDIO, "sample_rate": 0}, "sample_rate is not set"),
        ({**AUDIO, "shape": [100]}, "shorter than fft_length"),
    ],
)
def test_keyword_spotter_rejects_inputs_it_cannot_take(inputs, message):
    config = {**preset_values("keyword_spotter", "keyword_spotter_small"), "inputs": inputs}
    with pytest.raises(ConfigError, match=message):
        build_model("keyword_spotter", config)


def test_majority_macro_f1_by_hand():
    # always "1" on [0, 1, 1, 2]: class 1 has precision 1/2, recall 1 -> F1 2/3; others 0
    assert majority_macro_f1(np.array([1, 2, 1]), 1) == pytest.approx((2 / 3) / 3)
    assert majority_macro_f1(np.array([2, 0]), 1) == 0.0


# --- training, tracking, export and serving --------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from kerasops.pipelines.config import load_params
    from tests.conftest import train_run

    root = tmp_path_factory.mktemp("keyword_spotter_project")
    train = {"epochs": 20, "batch_size": 16, "learning_rate": 0.01, "patience": 20}
    models = {"keyword_spotter": {"preset": "keyword_spotter_tiny", "train": train}}
    write_params(root, datasets={"speech": TRAIN_SET}, models=models)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(root)
        params = load_params(root / "params.yaml")
        yield root, params, train_run(params, "keyword_spotter", "speech")


@pytest.mark.slow
def test_trained_keyword_spotter_beats_the_majority_class_on_the_unseen_voice(trained):
    from mlflow.tracking import MlflowClient

    from kerasops.pipelines.tracking import store as tracking
    from kerasops.pipelines.tracking.runs import headline

    root, params, result = trained
    metrics = result.metrics
    assert (
        metrics["unseen_voice_accuracy"] > metrics["baseline_unseen_voice_majority_accuracy"] + 0.2
    )
    assert metrics["unseen_voice_macro_f1"] > metrics["baseline_unseen_voice_majority_macro_f1"]
    assert metrics["test_accuracy"] > metrics["baseline_majority_accuracy"]
    assert metrics["test_macro_f1"] > metrics["baseline_majority_macro_f1"]
    on_disk = json.loads((result.run_dir / "metrics.json").read_text())
    assert on_disk["unseen_voice_accuracy"] == pytest.approx(metrics["unseen_voice_accuracy"])
    tracking.configure(params)
    run = MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    row = headline(run.data.metrics)
    assert row["metric"] == "unseen_voice_accuracy" and "(majority)" in row["baseline"]


@pytest.mark.slow
def test_exported_keyword_spotter_answers_rest_and_grpc_predicts(trained):
    import grpc
    import httpx
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from kerasops.serving.config import ServingConfig
    from kerasops.serving.export import export_saved_model
    from kerasops.serving.server import EmbeddedServer, model_entries
    from kerasops.serving.sources import load_from_folder

    root, params, result = trained
    source = load_from_folder(result.run_dir)  # what `kerasops export` reads
    config = ServingConfig(
        model_repository=str(root / "repo"),
        models_config=str(root / "models.config"),
        rest_port=0,
        grpc_port=0,
    )
    unseen = load_prepared("speech", params.path("prepared_data")).splits["unseen_voice"]
    clips = np.asarray(unseen.x[:3])
    classes = list(load_prepared("speech", params.path("prepared_data")).manifest.classes)
    exported = export_saved_model(
        source.model, "kws", config=config, warmup_examples=clips, class_names=classes
    )
    assert set(exported.signatures) == {"serving_default", "classify"}
    expected = source.model.predict(clips, verbose=0)

    server = EmbeddedServer(config, *model_entries(config))
    server.start()
    try:
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/kws:predict"
        reply = httpx.post(url, json={"instances": clips.tolist()}, timeout=30)
        bad = httpx.post(url, json={"instances": [[0.0] * 100]}, timeout=30)
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "kws"
            request.inputs["audio"].CopyFrom(tf.make_tensor_proto(clips))
            answer = stub.Predict(request, timeout=30)
    finally:
        server.stop()
    assert reply.status_code == 200, reply.text
    rows = reply.json()["predictions"]
    assert len(rows) == 3 and set(rows[0]) == {"probabilities", "classes"}
    np.testing.assert_allclose([r["probabilities"] for r in rows], expected, atol=1e-4)
    assert rows[0]["classes"] == classes
    assert 400 <= bad.status_code < 500
    probabilities = tf.make_ndarray(answer.outputs["probabilities"])
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    names = tf.make_ndarray(answer.outputs["classes"])
    assert [n.decode() for n in names[0]] == classes


@pytest.mark.slow
def test_an_image_model_on_audio_data_is_a_one_line_error(trained, capsys):
    from kerasops.pipelines.cli import main

    root, _, _ = trained
    code = main(["--params", str(root / "params.yaml"), "train", "cnn", "--dataset", "speech"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "takes image data, not audio data" in err, err
