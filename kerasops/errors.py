"""The error every part of kerasops raises for a mistake the user can fix."""

from __future__ import annotations


class KerasopsError(Exception):
    """A mistake the user can fix: reported as one line, with a non-zero exit."""


class ConfigError(KerasopsError, ValueError):
    """An unknown key, a wrong type or an out-of-range value in a configuration."""
