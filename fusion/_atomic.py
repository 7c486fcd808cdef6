"""Owned output folders: a re-export of :func:`dose._safeio.atomic_directory`.

One mechanism for every output folder (exclusive temporary names, the owner marker that
``--overwrite`` requires, links never followed) lives in :mod:`dose._safeio`; this name is
kept so that existing imports keep working.
"""

from __future__ import annotations

from dose._safeio import atomic_directory

__all__ = ["atomic_directory"]
