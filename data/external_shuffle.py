"""A split written to its shards in a seeded random order, in bounded memory (an external shuffle).

`write` scatters each serialized example into one of K temporary bucket files, chosen by a
seeded RNG; `close` reads the buckets back one at a time, permutes each with the same RNG and
writes it to the split's shards. K comes from the bytes the caller expects, so a bucket holds
about BUCKET_BYTES (its records and their index while permuted); one that comes out larger than
MAX_BUCKET_BYTES (the estimate off by more than 2x) is scattered again the same way. Memory is
one bucket, disk the split once more while it is written; the buckets live in a hidden folder
inside the shards' folder and are removed as they are written. The same records in the same
order and the same seed give the same shards.
"""

from __future__ import annotations

import dataclasses
import math
import mmap
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kerasops.data.progress import counter
from kerasops.data.shards import ShardWriter, WrittenShard

BUCKET_BYTES = 32 * 2**20  # what K aims a bucket at
MAX_BUCKET_BYTES = 64 * 2**20  # a larger bucket is scattered again
MAX_BUCKETS = 256  # bucket files open at once (two each) while scattering
MAX_DEPTH = 3  # scatters of one record at most (a bucket of a few huge records stays whole)
INDEX_BYTES = 20  # per record while a bucket is permuted: its length, end and permutation slot
_DRAWS = 4096  # bucket choices drawn at once
_READ = 4096  # record lengths read at once when a bucket is scattered again


def bucket_count(expected_bytes: int) -> int:
    """K for `expected_bytes` of records and index: at least 1, at most MAX_BUCKETS."""
    return min(MAX_BUCKETS, max(1, math.ceil(expected_bytes / BUCKET_BYTES)))


@dataclasses.dataclass(frozen=True)
class Bucket:
    """One closed bucket file: its records back to back, their lengths (uint32) beside."""

    records: Path
    lengths: Path
    count: int
    size: int  # bytes of its records

    @property
    def memory_bytes(self) -> int:
        return self.size + INDEX_BYTES * self.count

    def shuffled(self, rng: np.random.Generator) -> Iterator[bytes]:
        """Its records in a random order. The bucket is mapped, not read into the heap: its
        pages leave memory when it is unmapped, where a freed heap block of a bucket's size can
        stay held (glibc) beside the next bucket's."""
        lengths = np.fromfile(self.lengths, dtype="<u4")  # (n,)
        ends = np.cumsum(lengths, dtype=np.int64)  # (n,)
        order = rng.permutation(self.count)  # (n,)
        if self.size == 0:
            yield from (b"" for _ in order)  # mmap refuses an empty file
            return
        with (
            open(self.records, "rb") as f,
            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data,
        ):
            for i in order:
                end = int(ends[i])
                yield data[end - int(lengths[i]) : end]

    def in_order(self) -> Iterator[bytes]:
        """Its records as written, read a few at a time."""
        with open(self.records, "rb") as data, open(self.lengths, "rb") as lengths:
            while chunk := lengths.read(4 * _READ):
                for length in np.frombuffer(chunk, dtype="<u4").tolist():
                    yield data.read(length)

    def remove(self) -> None:
        self.records.unlink()
        self.lengths.unlink()


class Scatter:
    """K open bucket files in `folder`; each record goes to one drawn by `rng`."""

    def __init__(self, folder: Path, buckets: int, rng: np.random.Generator):
        folder.mkdir(parents=True)
        self.folder, self.rng, self.count = folder, rng, 0
        self._paths = [
            (folder / f"{k:05d}.records", folder / f"{k:05d}.lengths") for k in range(buckets)
        ]
        # open across `write` calls, closed by `close` or `abort`
        self._files = [(open(r, "wb"), open(n, "wb")) for r, n in self._paths]  # noqa: SIM115
        self._counts, self._sizes = [0] * buckets, [0] * buckets
        self._choices, self._next = np.empty(0, dtype=np.int64), 0

    def write(self, record: bytes) -> None:
        if self._next == len(self._choices):
            self._choices, self._next = self.rng.integers(len(self._files), size=_DRAWS), 0
        k = int(self._choices[self._next])
        self._next += 1
        records, lengths = self._files[k]
        records.write(record)
        lengths.write(len(record).to_bytes(4, "little"))
        self._counts[k] += 1
        self._sizes[k] += len(record)
        self.count += 1

    def close(self) -> list[Bucket]:
        """The buckets, their files closed."""
        self.abort()
        return [
            Bucket(r, n, count, size)
            for (r, n), count, size in zip(self._paths, self._counts, self._sizes, strict=True)
        ]

    def abort(self) -> None:
        """Close the bucket files."""
        for records, lengths in self._files:
            records.close()
            lengths.close()


class ShuffledShardWriter:
    """A ShardWriter whose split comes out in a seeded random order (see the module's doc)."""

    def __init__(
        self,
        folder: Path,
        split: str,
        max_bytes: int,
        seed: int,
        expected_bytes: int,
        what: str = "shuffling",
    ):
        self._shards = ShardWriter(folder, split, max_bytes)
        self._temporary = Path(folder) / f".{split}-shuffle"
        self._rng = np.random.default_rng(seed)
        self._scatter = Scatter(self._temporary / "0", bucket_count(expected_bytes), self._rng)
        self._what = what

    def write(self, record: bytes) -> None:
        """Append one serialized example to a bucket."""
        self._scatter.write(record)

    def close(self) -> list[WrittenShard]:
        """Write the buckets, each permuted, to the shards; remove them; return the shards."""
        try:
            with counter(self._scatter.count, self._what, "row") as bar:
                self._drain(self._scatter.close(), 1, bar)
        finally:
            shutil.rmtree(self._temporary, ignore_errors=True)
        return self._shards.close()

    def abort(self) -> None:
        """Close and remove the buckets without writing them (a failed preparation)."""
        self._scatter.abort()
        shutil.rmtree(self._temporary, ignore_errors=True)

    def _drain(self, buckets: list[Bucket], depth: int, bar) -> None:
        for k, bucket in enumerate(buckets):
            if bucket.memory_bytes > MAX_BUCKET_BYTES and bucket.count > 1 and depth < MAX_DEPTH:
                self._drain(self._scattered_again(bucket, k), depth + 1, bar)
                continue
            for record in bucket.shuffled(self._rng):
                self._shards.write(record)
            bar.update(bucket.count)
            bucket.remove()

    def _scattered_again(self, bucket: Bucket, k: int) -> list[Bucket]:
        """A bucket too large to permute in memory, scattered into smaller ones beside it."""
        folder = bucket.records.parent / f"{k:05d}"
        again = Scatter(folder, bucket_count(bucket.memory_bytes), self._rng)
        try:
            for record in bucket.in_order():
                again.write(record)
        finally:
            buckets = again.close()
        bucket.remove()
        return buckets
