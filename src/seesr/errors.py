"""Exceptions the CLI turns into one clear line (DESIGN.md §7)."""

from __future__ import annotations


class SeeSRError(Exception):
    """A user-facing error: the message alone explains what went wrong and what was expected."""


class WeightsError(SeeSRError, FileNotFoundError):
    """Weights are missing, incomplete or do not match the expected architecture."""


class BadImageError(SeeSRError, ValueError):
    """An input image cannot be processed (empty, not an image, truncated, too large, ...)."""
