"""Entry point: the ``hybridfuse`` group, logging flags and the mapping of errors to exit codes."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import traceback

import click

from hybridfuse import __version__
from hybridfuse._safeio import one_line, terminal_text

from .errors import exit_code_for, is_library_error

log = logging.getLogger("hybridfuse")


def configure_logging(verbosity: int) -> None:
    """Log to stderr: WARNING by default, INFO with -v, DEBUG with -vv, ERROR with -q."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(
        max(min(verbosity, 2), -1), logging.DEBUG
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries' own logs and warnings (pydicom's decoder tracebacks, Numba, PIL, dask)
    # reach the terminal only with -vv: their content is said once, in our error line. A
    # filter on our handler, not logger levels, since pydicom resets its level on import.
    logging.captureWarnings(True)
    if verbosity < 2:
        handler.addFilter(_not_from_libraries)


_NOISY_LOGGERS = ("pydicom", "numba", "PIL", "distributed", "matplotlib", "py.warnings", "imageio")


def _not_from_libraries(record: logging.LogRecord) -> bool:
    return not record.name.startswith(_NOISY_LOGGERS)


class _OneLineFormatter(logging.Formatter):
    """Log records as one line each, control characters escaped, no tracebacks."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        record.exc_info = record.exc_text = record.stack_info = None
        return terminal_text(super().format(record))


def _terminate_cleanly(signum, _frame) -> None:
    """SIGTERM unwinds like Ctrl-C, so temporary outputs are removed on the way out."""
    raise SystemExit(128 + signum)


class HybridFuseGroup(click.Group):
    """A click group that turns library errors into one line and an exit code."""

    def invoke(self, ctx: click.Context):
        """Run the command; print a library error on one line and exit with its code."""
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # one line too, not click's four (Usage/Try/Error)
            msg = terminal_text(exc.format_message())
            click.echo(f"hybridfuse: error: {msg} (see --help)", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # every library error ends here, once
            verbose = (ctx.obj or {}).get("verbosity", 0) > 0
            if verbose:
                traceback.print_exc(file=sys.stderr)
            msg = one_line(exc) or type(exc).__name__
            known = exit_code_for(exc)
            if isinstance(exc, MemoryError):  # a limit we did not foresee, not a bug to hide
                msg = f"not enough memory for this input ({msg}); see docs/hardening.md"
            prefix = "error" if is_library_error(exc) else "internal error"
            hint = "" if verbose else " (run with -v for details)"
            click.echo(f"hybridfuse: {prefix}: {msg}{hint if prefix != 'error' else ''}", err=True)
            ctx.exit(known)


@click.group(cls=HybridFuseGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug); tracebacks.")
@click.option("-q", "--quiet", count=True, help="Less output: errors only, no progress.")
@click.version_option(__version__, "--version", prog_name="hybridfuse")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: int) -> None:
    """Fuse ultrasound with fluoroscopy and account for the radiation dose it saved.

    Exit codes: 0 success, 1 processing failure, 2 usage error or bad input.
    """
    ctx.ensure_object(dict)
    ctx.obj["verbosity"] = verbose - quiet
    configure_logging(verbose - quiet)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate_cleanly)


def _register_commands() -> None:
    from .dose import dose
    from .fuse import fuse
    from .info import info
    from .pacs import pacs
    from .register import register
    from .run import batch, demo, run
    from .synth import synth

    cli.add_command(dose)
    cli.add_command(fuse)
    cli.add_command(info)
    cli.add_command(register)
    cli.add_command(run)
    cli.add_command(demo)
    cli.add_command(batch)
    cli.add_command(synth)
    cli.add_command(pacs)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="hybridfuse")
