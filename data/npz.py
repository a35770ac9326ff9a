"""Deterministic `.npz` writing, pickle-safe reading and file hashing for prepared splits."""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from kerasops.data.errors import DataError

# Text splits hold one Python string per example in an object array, which `.npy` stores as a
# pickle stream. Rebuilding such an array needs exactly these globals; anything else is refused,
# so a tampered file cannot run code while it is read.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }
)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays uncompressed with fixed zip timestamps: equal arrays give equal bytes."""
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(arrays[key]), allow_pickle=True)


def read_npz(path: Path, remedy: str = "prepare the dataset again") -> dict[str, np.ndarray]:
    """Read every array of an `.npz`; object arrays go through an array-only unpickler."""
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if member.endswith(".npy"):
                    arrays[member[: -len(".npy")]] = _read_npy(archive.read(member))
    except (zipfile.BadZipFile, ValueError, OSError, pickle.UnpicklingError, EOFError) as exc:
        raise DataError(f"{path} cannot be read as .npz ({exc}); {remedy}") from None
    return arrays


def _read_npy(data: bytes) -> np.ndarray:
    buffer = io.BytesIO(data)
    try:
        return np.lib.format.read_array(buffer, allow_pickle=False)
    except ValueError:  # an object array: skip the header, then unpickle arrays only
        buffer.seek(0)
        version = np.lib.format.read_magic(buffer)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(buffer)
        else:  # 2.0 and 3.0 share the header layout
            np.lib.format.read_array_header_2_0(buffer)
        return _ArrayOnlyUnpickler(buffer).load()
