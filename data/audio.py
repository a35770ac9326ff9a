"""Audio data: the `speech_commands` generator (spoken keywords made offline with espeak-ng) and
the reader of a folder of class folders of WAV files (`audio_folder`), for built-in and user data
alike:

    <folder>/<class>/<name>.wav    one clip per file, PCM WAV, any channel count

Every clip becomes `sample_rate` (16 kHz) mono float32 samples in [-1, 1] over a window of
`clip_seconds` (1 s), with these stated rules:

* another sample rate is resampled (polyphase, scipy's `resample_poly`) to `sample_rate`;
  stereo is averaged to mono;
* a clip shorter than the window is padded with silence at the end; a clip longer than the
  window is refused (a DataError naming the file): cutting it could cut off the word;
* a file that is not a readable PCM WAV, or a non-`.wav` file among the clips, is refused.

The built-in set speaks each keyword in many espeak-ng voices (a language or accent with a
voice variant, `en-us+f2`), speeds (words per minute) and pitches, places it at a random start in
the window and adds background noise at a random signal-to-noise ratio, every draw seeded.
One voice is held out entirely: its clips go to `<raw>/unseen_voice/` and become the prepared
`unseen_voice` split, which no training, validation or test example shares a voice with; the
others are in `<raw>/voices/`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import shutil
import subprocess
import wave
from collections.abc import Iterator
from math import gcd
from pathlib import Path

import numpy as np

from kerasops.data.errors import DataError
from kerasops.data.materialize import write_if_changed
from kerasops.data.splits import SPLITS, stratified_split

SAMPLE_RATE = 16000
UNSEEN_VOICE_SPLIT = "unseen_voice"
SEEN_FOLDER = "voices"  # the built-in set's clips of the voices heard in training
ESPEAK = "espeak-ng"
ESPEAK_FIX = "install it with `apt-get install espeak-ng` (or `make setup`, which does)"


@dataclasses.dataclass(frozen=True)
class SpeechSpec:
    """What the `speech_commands` generator speaks, and how."""

    words: tuple[str, ...]
    voices: tuple[str, ...]  # espeak-ng voices heard in train, val and test
    unseen_voice: str  # the voice only the `unseen_voice` split hears
    speeds: tuple[int, ...]  # espeak-ng -s, words per minute
    pitches: tuple[int, ...]  # espeak-ng -p, 0..99
    takes: int  # clips per (word, voice), each with its own speed, pitch, offset and noise
    noise_snr_db: tuple[float, float]  # background noise drawn in this range of SNR
    seed: int
    sample_rate: int = SAMPLE_RATE
    clip_seconds: float = 1.0


def espeak_binary() -> str:
    """The path of espeak-ng; DataError naming the fix when it is not installed."""
    found = shutil.which(ESPEAK)
    if found is None:
        raise DataError(f"{ESPEAK} is not installed; speech_commands is spoken by it: {ESPEAK_FIX}")
    return found


def speak(binary: str, word: str, voice: str, speed: int, pitch: int) -> bytes:
    """The WAV bytes espeak-ng writes for `word` (22.05 kHz mono 16-bit)."""
    command = [binary, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word]
    try:
        done = subprocess.run(command, capture_output=True, check=True, timeout=30)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        raise DataError(
            f"{ESPEAK} failed to speak {word!r} in voice {voice!r} "
            f"({detail.decode(errors='replace').strip() or exc}); check the voice name"
        ) from None
    return done.stdout


def _takes(spec: SpeechSpec) -> list[tuple[str, str, str, int, int, int]]:
    """(folder, word, voice, speed, pitch, take seed) for every clip, in a fixed order."""
    rng = np.random.default_rng(spec.seed)
    rows = []
    voices = [(v, SEEN_FOLDER) for v in spec.voices] + [(spec.unseen_voice, UNSEEN_VOICE_SPLIT)]
    for voice, folder in voices:
        for word in spec.words:
            for _ in range(spec.takes):
                speed = int(rng.choice(spec.speeds))
                pitch = int(rng.choice(spec.pitches))
                rows.append((folder, word, voice, speed, pitch, int(rng.integers(2**31))))
    return rows


def _voice_name(voice: str) -> str:
    return voice.replace("+", "_").replace("/", "_")


def render_take(spoken: bytes, spec: SpeechSpec, take_seed: int, name: str) -> np.ndarray:
    """One spoken word as a window of `spec.sample_rate` int16 samples: resampled, placed at a
    random start, trimmed of silence, with background noise at a random SNR."""
    samples, rate = decode_wav(spoken, name)
    samples = resample(samples, rate, spec.sample_rate)
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    if loud.size:
        samples = samples[loud[0] : loud[-1] + 1]  # espeak-ng's leading and trailing silence
    window = int(round(spec.clip_seconds * spec.sample_rate))
    samples = samples[:window]
    rng = np.random.default_rng(take_seed)
    start = int(rng.integers(0, window - len(samples) + 1))
    clip = np.zeros(window, dtype=np.float64)
    clip[start : start + len(samples)] = samples
    power = float(np.mean(samples**2)) if samples.size else 1e-4
    snr_db = rng.uniform(*spec.noise_snr_db)
    noise = rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), window)
    clip = clip + noise
    clip *= 0.9 / max(1e-6, float(np.max(np.abs(clip))))  # peak at 0.9 of full scale
    return np.round(clip * 32767).astype(np.int16)


def materialize_speech_commands(raw_dir: Path, spec: SpeechSpec, workers: int = 2) -> Path:
    """Write `raw_dir/voices/<word>/<voice>-<n>.wav` (seen voices) and
    `raw_dir/unseen_voice/<word>/<voice>-<n>.wav` (the held-out voice); return `raw_dir`.

    Equal specs give byte-identical files; files of an earlier, other spec are removed. Raises
    DataError naming the fix when espeak-ng is not installed.
    """
    binary = espeak_binary()
    rows = _takes(spec)
    counters: dict[tuple[str, str, str], int] = {}
    paths = []
    for folder, word, voice, *_ in rows:
        key = (folder, word, voice)
        counters[key] = counters.get(key, 0) + 1
        paths.append(raw_dir / folder / word / f"{_voice_name(voice)}-{counters[key]:03d}.wav")

    def make(index: int) -> Path:
        _, word, voice, speed, pitch, take_seed = rows[index]
        spoken = speak(binary, word, voice, speed, pitch)
        clip = render_take(spoken, spec, take_seed, f"{ESPEAK} output for {word!r}")
        write_if_changed(paths[index], encode_wav(clip, spec.sample_rate))
        return paths[index]

    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        wanted = set(pool.map(make, range(len(rows))))
    for stale in set(raw_dir.rglob("*.wav")) - wanted:
        stale.unlink()
    for folder in sorted(raw_dir.rglob("*"), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return raw_dir


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """int16 mono samples as PCM WAV bytes."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())
    return buffer.getvalue()


def decode_wav(data: bytes | Path, name: str) -> tuple[np.ndarray, int]:
    """(mono float64 samples in [-1, 1], sample rate) of PCM WAV bytes or a file; DataError
    naming `name` for anything else."""
    try:
        with wave.open(str(data) if isinstance(data, Path) else io.BytesIO(data), "rb") as clip:
            channels, width, rate = clip.getnchannels(), clip.getsampwidth(), clip.getframerate()
            frames = clip.readframes(clip.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise DataError(
            f"{name} cannot be read as a PCM WAV file ({exc}); remove or replace it"
        ) from None
    if width not in (1, 2, 4) or channels < 1 or rate < 1:
        raise DataError(f"{name} is a {8 * width}-bit WAV; use 8, 16 or 32-bit PCM")
    if len(frames) % (width * channels):
        raise DataError(f"{name} is truncated (a partial frame); remove or replace it")
    if width == 1:
        values = (np.frombuffer(frames, dtype=np.uint8).astype(np.float64) - 128) / 128
    else:
        dtype = "<i2" if width == 2 else "<i4"
        values = np.frombuffer(frames, dtype=dtype).astype(np.float64) / 2 ** (8 * width - 1)
    return values.reshape(-1, channels).mean(axis=1), rate  # (T,)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """`samples` at `rate` as samples at `target` (polyphase filtering); unchanged if equal."""
    if rate == target:
        return samples
    # deferred: scipy loads slowly; only clips of another rate need it
    from scipy.signal import resample_poly

    common = gcd(rate, target)
    return resample_poly(samples, target // common, rate // common)


def read_clip(path: Path, sample_rate: int, clip_seconds: float) -> np.ndarray:
    """One WAV file as (window,) float32 samples by the module's rules (resample, pad, refuse
    a longer clip)."""
    samples, rate = decode_wav(path, str(path))
    samples = resample(samples, rate, sample_rate)
    window = int(round(clip_seconds * sample_rate))
    if len(samples) > window:
        raise DataError(
            f"{path} is {len(samples) / sample_rate:.2f} s long, longer than the "
            f"{clip_seconds:g} s window; cut it to the word, or raise clip_seconds"
        )
    clip = np.zeros(window, dtype=np.float32)
    clip[: len(samples)] = samples
    return clip


def audio_files(folder: Path) -> list[Path]:
    """The clips of `folder/<class>/`, sorted. DataError for fewer than two class folders, a
    file that is not a `.wav` or an empty class folder."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; an audio_folder is <folder>/<class>/<clip>.wav")
    classes = [p for p in sorted(folder.iterdir()) if p.is_dir()]
    if len(classes) < 2:
        raise DataError(
            f"{folder} needs one subfolder of .wav clips per class (at least two), e.g. "
            f"{folder}/yes/001.wav and {folder}/no/001.wav"
        )
    files = []
    for cls in classes:
        found = sorted(p for p in cls.rglob("*") if p.is_file() and not p.name.startswith("."))
        for path in found:
            if path.suffix.lower() != ".wav":
                raise DataError(
                    f"{path} is not a .wav file; audio_folder reads PCM WAV clips only: "
                    "convert it (e.g. `sox in.mp3 out.wav`) or remove it"
                )
        if not found:
            raise DataError(f"class folder {cls} holds no .wav clips; add some or remove it")
        files.extend(found)
    return files


@dataclasses.dataclass(frozen=True)
class AudioFolderPlan:
    """An audio folder listed and split, not yet read: files[split] and labels[split]; the
    clips are read one by one while the shards are written, so memory does not grow with them."""

    folder: Path
    classes: tuple[str, ...]
    files: dict[str, list[Path]]
    labels: dict[str, np.ndarray]  # (N,) int32 class index per file
    sample_rate: int
    clip_seconds: float

    @property
    def window(self) -> int:
        """Samples per clip."""
        return int(round(self.clip_seconds * self.sample_rate))

    def clips(self, split: str) -> Iterator[tuple[int, np.ndarray]]:
        """(class index, (window,) float32 samples) of each file of `split`, in order."""
        for path, label in zip(self.files[split], self.labels[split], strict=True):
            yield int(label), read_clip(path, self.sample_rate, self.clip_seconds)


def plan_audio_folder(
    folder: Path,
    sample_rate: int,
    clip_seconds: float,
    split_fields: dict,
    unseen_voice: Path | None = None,
) -> AudioFolderPlan:
    """List `folder/<class>/*.wav` and split it stratified (train in a seeded random order, so a
    bounded shuffle buffer still mixes the classes); `unseen_voice`, a folder of the same
    classes, becomes the `unseen_voice` split. DataError for a stray file or a class only the
    held-out folder has."""
    files = audio_files(folder)
    names = np.array([p.relative_to(folder).parts[0] for p in files], dtype=str)
    classes = tuple(sorted(set(names.tolist())))
    y = np.searchsorted(np.array(classes), names).astype(np.int32)  # (N,) class index
    seed = split_fields["seed"]
    indices = stratified_split(y, split_fields["val_fraction"], split_fields["test_fraction"], seed)
    indices["train"] = np.random.default_rng(seed).permutation(indices["train"])
    plan_files = {s: [files[i] for i in indices[s]] for s in SPLITS}
    labels = {s: y[indices[s]] for s in SPLITS}
    if unseen_voice is not None:
        held = audio_files(unseen_voice)
        held_names = [p.relative_to(unseen_voice).parts[0] for p in held]
        unknown = sorted(set(held_names) - set(classes))
        if unknown:
            raise DataError(
                f"{unseen_voice} has class folders {unknown} that {folder} does not; "
                "use the same class names in both"
            )
        plan_files[UNSEEN_VOICE_SPLIT] = held
        labels[UNSEEN_VOICE_SPLIT] = np.searchsorted(np.array(classes), held_names).astype(np.int32)
    return AudioFolderPlan(folder, classes, plan_files, labels, sample_rate, clip_seconds)
