"""Benchmarks; ``hybridfuse`` first, so that its CPU code paths are chosen before NumPy loads."""

import hybridfuse  # noqa: F401
