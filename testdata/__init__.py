"""Test and demo data: the phantom generator and the committed sample case.

``sample/lumbar-mbb-seed1/`` was written by ``hybridfuse synth --seed 1 --procedure
lumbar-mbb``; ``SHA256SUMS`` lists the digest of every committed sample file, and
:func:`sample_case` refuses a sample that does not match it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["SAMPLE_CASE", "sample_case", "verify_sample"]

_HERE = Path(__file__).resolve().parent
SAMPLE_CASE = "lumbar-mbb-seed1"


def _manifest() -> dict[str, str]:
    out = {}
    for line in (_HERE / "SHA256SUMS").read_text(encoding="utf-8").splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.strip()] = digest
    return out


def verify_sample() -> list[str]:
    """Names of sample files that are missing or differ from ``SHA256SUMS``."""
    bad = []
    for name, digest in _manifest().items():
        path = _HERE / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            bad.append(name)
    return bad


def sample_case() -> Path:
    """Folder of the committed sample case, after checking its digests."""
    bad = verify_sample()
    if bad:
        raise RuntimeError(
            f"sample data differs from testdata/SHA256SUMS: {', '.join(bad)}; restore it "
            "with git checkout testdata/ or regenerate with hybridfuse synth and update "
            "SHA256SUMS"
        )
    return _HERE / "sample" / SAMPLE_CASE
