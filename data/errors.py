"""The one error type `data/` raises for a mistake the user can fix."""

from __future__ import annotations

from kerasops.errors import KerasopsError


class DataError(KerasopsError):
    """A missing, malformed or modified dataset input: one line on what is wrong and what to do."""
