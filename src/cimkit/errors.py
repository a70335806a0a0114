"""Exceptions a user can cause. The CLI prints these in one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CimkitError(Exception):
    """Base class of every error cimkit raises on purpose."""


class ConfigError(CimkitError, ValueError):
    """A configuration value (TOML key, CLI flag, API argument) is unknown, mistyped or out of range."""


class DataError(CimkitError, ValueError):
    """A dataset is missing, corrupt, or cannot be downloaded."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(what: str, value: str, choices: Iterable[str]) -> ConfigError:
    """Build the standard error for an unknown name: what, the value, the allowed set and a hint."""
    choices = sorted(str(c) for c in choices)
    return ConfigError(
        f"unknown {what} '{value}'{did_you_mean(value, choices)}; allowed: {', '.join(choices)}"
    )


class TrainingDivergedError(CimkitError, FloatingPointError):
    """The loss became NaN/inf (usually a learning rate too high for the model)."""
