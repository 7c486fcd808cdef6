"""Synthetic hybrid procedures with known ground truth (the project's phantom)."""

from .procedure import PRESETS, TRUTH_SCHEMA, generate_procedure, load_truth

__all__ = ["PRESETS", "TRUTH_SCHEMA", "generate_procedure", "load_truth"]
