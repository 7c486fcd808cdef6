"""Folders that appear only when complete: the one mechanism behind every output folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_directory"]


@contextmanager
def atomic_directory(out_dir: Path) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``out_dir``; rename it into place on success.

    On any exception (including KeyboardInterrupt) the temporary folder is removed and
    ``out_dir`` is left as it was. A process killed outright leaves only the hidden
    ``.NAME.partial-*`` folder, never something that looks finished.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
