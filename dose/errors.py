"""Errors raised by the dose package."""

from __future__ import annotations

__all__ = ["DoseError", "DoseInputError"]


class DoseError(Exception):
    """Root of every error the dose package raises."""


class DoseInputError(DoseError, ValueError):
    """A dose record cannot be used (not a dose object, wrong kind, unreadable)."""
