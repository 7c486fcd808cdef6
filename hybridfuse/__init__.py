"""hybridfuse: fuse ultrasound with fluoroscopy and account for the radiation dose it saved.

The subpackages live in the repository's top-level folders and are installed under this
name: ``hybridfuse.registration`` (numeric library), ``hybridfuse.fusion`` (files,
overlays, pipeline), ``hybridfuse.dose`` (dose records and estimates), ``hybridfuse.cli``
(the command line) and ``hybridfuse.testdata`` (sample case and phantom generator).
"""

from importlib.metadata import PackageNotFoundError, version

from ._cpu_paths import pin_cpu_paths

pin_cpu_paths()  # before anything of ours imports NumPy: the same numbers on every CPU

try:
    __version__ = version("hybridfuse")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
