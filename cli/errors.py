"""The exit codes every command uses, and which library error maps to which.

=============  ====================================================================
exit code      meaning
=============  ====================================================================
0              success
1              processing failure (the input was usable but the work failed)
2              usage error or bad input (unreadable file, wrong kind of file, ...)
3              ``pacs``: cannot connect to the archive (refused, unknown host)
4              ``pacs``: the archive rejected or aborted the association
5              ``pacs``: a failure status (C-ECHO, C-FIND, C-STORE, C-GET), no such study
6              ``pacs``: no answer within ``--timeout``
=============  ====================================================================

Every command module reads them from here, never from :mod:`hybridfuse.cli.main`, which
imports the commands (an import back would be a circle).
"""

from __future__ import annotations

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_PACS_FAILURE",
    "EXIT_PACS_REJECTED",
    "EXIT_PACS_TIMEOUT",
    "EXIT_PACS_UNREACHABLE",
    "exit_code_for",
    "is_library_error",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_PACS_UNREACHABLE = 3
EXIT_PACS_REJECTED = 4
EXIT_PACS_FAILURE = 5
EXIT_PACS_TIMEOUT = 6


def exit_code_for(exc: BaseException) -> int:
    """Exit code of an exception raised by the library: 2 for bad input, 3-6 PACS, else 1."""
    from hybridfuse._options import OptionError
    from hybridfuse._safeio import UnsafeOutputError
    from hybridfuse.dose.errors import DoseInputError
    from hybridfuse.fusion import pacs
    from hybridfuse.fusion.errors import InputError
    from hybridfuse.registration.errors import IllPosedGeometryError, LandmarkInputError

    bad_input = (
        OptionError,  # an option value the definition refuses, wherever it is built
        InputError,
        DoseInputError,
        UnsafeOutputError,
        FileExistsError,
        FileNotFoundError,
        IllPosedGeometryError,
        LandmarkInputError,
    )
    network = (
        (pacs.PacsUnreachableError, EXIT_PACS_UNREACHABLE),
        (pacs.PacsRejectedError, EXIT_PACS_REJECTED),
        (pacs.PacsFailureError, EXIT_PACS_FAILURE),
        (pacs.PacsTimeoutError, EXIT_PACS_TIMEOUT),
    )
    for cls, code in network:
        if isinstance(exc, cls):
            return code
    return EXIT_BAD_INPUT if isinstance(exc, bad_input) else EXIT_FAILURE


def is_library_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure the library foresaw (said as "error", not "internal")."""
    from hybridfuse._options import OptionError
    from hybridfuse._safeio import UnsafeOutputError
    from hybridfuse.dose.errors import DoseError
    from hybridfuse.fusion.errors import FusionError
    from hybridfuse.registration.errors import RegistrationError

    return isinstance(
        exc,
        (
            MemoryError,
            OptionError,
            FusionError,
            DoseError,
            RegistrationError,
            UnsafeOutputError,
            FileExistsError,
            FileNotFoundError,
        ),
    )
