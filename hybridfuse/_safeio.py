"""Outputs that touch only what they own, and text that is safe where it lands.

Every file and folder the project writes goes through here: temporary names are created
exclusively (never predictable, never written through a link) and renamed into place when
complete; a folder is replaced only when a marker says this project wrote it. Data that
reaches HTML, CSV or a terminal is escaped here too, so escaping is by construction.

Both :mod:`dose` and :mod:`fusion` import it (never each other for it); it imports
nothing of the project.
"""

from __future__ import annotations

import errno
import hashlib
import html
import json
import math
import numbers
import os
import re
import secrets
import shutil
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "OWNER_MARK",
    "UnsafeOutputError",
    "atomic_directory",
    "atomic_file",
    "check_case_id",
    "check_out_separate",
    "clean_stale",
    "csv_cell",
    "file_record",
    "input_label",
    "recorded_name",
    "is_owned",
    "json_safe",
    "owner_kind",
    "write_owner_mark",
    "html_text",
    "script_json",
    "sha256_file",
    "terminal_text",
    "one_line",
    "settings_file_problem",
    "write_bytes",
    "write_text",
]

#: File placed in every output folder this project writes; ``--overwrite`` replaces a
#: folder only when it holds this file (a regular file, not a link).
OWNER_MARK = ".hybridfuse-output"

#: A new file, never through a link planted under its name.
_EXCLUSIVE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


class UnsafeOutputError(ValueError):
    """An output location that would touch something the project does not own."""


def _tag() -> str:
    # The pid lets the next run tell a dead run's leftovers from a live one's; the word and
    # 16 hex digits keep a user's own dot-names (".photos.old-2023-20240115") from matching.
    return f"hybridfuse-{os.getpid()}-{secrets.token_hex(8)}"


def _os_error(exc: OSError, where: Path) -> UnsafeOutputError:
    why = {
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EROFS: "read-only file system",
        errno.ENOSPC: "no space left on device",
        errno.EDQUOT: "disk quota exceeded",
        errno.ENOTDIR: "a path component is a file, not a folder",
        errno.EEXIST: "already exists",
    }.get(exc.errno, exc.strerror or type(exc).__name__)
    return UnsafeOutputError(f"{where}: cannot write ({why})")


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh, exclusively created temporary path beside ``path``; rename on success.

    The temporary name is random (``.NAME.partial-hybridfuse-PID-HEX16…``), created with ``O_EXCL``,
    so a link planted under a predictable name is never followed. On any exception the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    # Named before it exists, so a signal arriving just after the file is made still
    # finds it to remove (as :func:`atomic_directory`).
    tmp = path.parent / f".{path.name}.partial-{_tag()}"
    try:
        _new_file(tmp)
        yield tmp
        if path.is_symlink() or path.is_dir():
            raise UnsafeOutputError(f"{path}: is a link or a folder; not replaced")
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise _os_error(exc, path) from exc
    except BaseException:
        _discard(tmp)
        raise


def _new_file(path: Path) -> None:
    """Create ``path`` empty, exclusively, never through a link (the umask applies)."""
    os.close(os.open(path, _EXCLUSIVE, 0o666))


def _discard(tmp: Path) -> None:
    """Remove ``tmp`` if it is there, keeping the error that got us here.

    Where it could not be made (a file for a folder, a name too long) removing it fails
    the same way; :func:`clean_stale` takes what a failed removal leaves.
    """
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_file`."""
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_file`."""
    path = Path(path)
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return path


def is_owned(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds the owner marker (a regular file, not a link)."""
    mark = Path(folder) / OWNER_MARK
    return mark.is_file() and not mark.is_symlink()


def _mark(folder: str | os.PathLike) -> dict:
    """The owner marker's content ({} where it is missing or unreadable)."""
    try:
        data = json.loads((Path(folder) / OWNER_MARK).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def owner_kind(folder: str | os.PathLike) -> str | None:
    """What the marker says the folder holds (``"synth"`` for generated input data)."""
    kind = _mark(folder).get("kind")
    return kind if isinstance(kind, str) else None


def write_owner_mark(
    folder: str | os.PathLike, kind: str | None = None, files: list[str] | None = None
) -> None:
    """Mark ``folder`` as written by this project; ``kind`` keeps other commands off it.

    ``files``: what it wrote there (:func:`_entries`), so that ``--overwrite`` can tell a
    file a user added later, which it must not delete (:func:`foreign_entries`).
    """
    mark = {"written_by": "hybridfuse", **({"kind": kind} if kind else {})}
    if files is not None:
        mark["files"] = files
    write_text(Path(folder) / OWNER_MARK, json.dumps(mark) + "\n")


def _entries(folder: Path) -> list[str]:
    """Every file, folder and link under ``folder``, relative and '/'-separated.

    The marker is left out; links are listed, never followed.
    """
    out = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        out += [(rel / name).as_posix() for name in dirs + files]
    return sorted(set(out) - {OWNER_MARK})


def foreign_entries(folder: str | os.PathLike) -> list[str]:
    """What lies in an owned ``folder`` that hybridfuse did not write there.

    Empty for a marker that lists nothing (written before the list existed): those
    folders are replaced as before.
    """
    folder = Path(folder)
    written = _mark(folder).get("files")
    if not isinstance(written, list):
        return []
    others = set(_entries(folder)) - set(written)
    # Our own temporaries left by a killed run (or planted under their old names) are
    # debris the replacement removes, links included and never followed.
    return sorted(e for e in others if not any(_TEMPORARY.match(c) for c in e.split("/")))


#: Names of this module's temporaries, current (``.NAME.partial-hybridfuse-…``) and older.
_TEMPORARY = re.compile(r"^\..+\.(?:partial|old)(?:-.*)?$")


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)  # removes links inside, never what they point to


def check_out_target(out_dir: Path, overwrite: bool, kind: str | None = None) -> None:
    """Refuse an output folder that is a link, a file, or someone else's non-empty folder.

    A folder whose marker names a kind (synthetic input data) is replaced only by a
    writer of that kind: ``run --overwrite`` never replaces a case made by ``synth``.
    """
    if out_dir.is_symlink():
        raise UnsafeOutputError(f"{out_dir}: output folder is a symbolic link; refused")
    ancestor = out_dir.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():  # a file on the way: found now, not after the work
        raise UnsafeOutputError(f"{out_dir}: {ancestor} is not a folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise UnsafeOutputError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and os.path.ismount(out_dir):
        raise UnsafeOutputError(
            f"{out_dir}: is a mount point, which cannot be replaced; give a folder inside it"
        )
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists and is not empty; pass --overwrite")
        if not is_owned(out_dir):
            raise UnsafeOutputError(
                f"{out_dir}: not an output folder of hybridfuse (no {OWNER_MARK}); "
                "--overwrite replaces only those"
            )
        foreign = foreign_entries(out_dir)
        if foreign:  # a clinician's notes beside the overlays were deleted with the folder
            raise UnsafeOutputError(
                f"{out_dir}: holds {len(foreign)} file(s) hybridfuse did not write "
                f"({terminal_text(foreign[0])}{', ...' if len(foreign) > 1 else ''}), which "
                "--overwrite would delete; move them out or choose another folder"
            )
        marked = owner_kind(out_dir)
        if marked is not None and marked != kind:
            raise UnsafeOutputError(
                f"{out_dir}: holds hybridfuse {marked} data, which --overwrite here does not "
                "replace; choose another folder"
            )


@contextmanager
def atomic_directory(
    out_dir: str | os.PathLike, *, overwrite: bool = False, kind: str | None = None
) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``out_dir``; move it into place on success.

    ``out_dir`` must be absent, empty, or (with ``overwrite``) a folder this project wrote
    (it holds :data:`OWNER_MARK`; of the same ``kind`` when its marker names one). Links
    are never followed. On any exception the
    temporary folder is removed and ``out_dir`` is left as it was; a process killed
    outright leaves only a ``.NAME.partial-hybridfuse-PID-*`` folder, which :func:`clean_stale`
    removes when a command next starts there (not here: a batch would rescan its root
    once per case).
    """
    out_dir = Path(out_dir)
    check_out_target(out_dir, overwrite, kind)
    # Named before it exists, so a signal arriving just after the folder is made (a
    # SIGTERM as soon as it appears) still finds it to remove; the tag's 64 random bits
    # keep the name from being anyone else's.
    tmp = out_dir.parent / f".{out_dir.name}.partial-{_tag()}"
    try:
        try:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(tmp, 0o777)  # the umask applies, as to any folder the user makes
        except OSError as exc:
            raise _os_error(exc, out_dir) from exc
        write_owner_mark(tmp, kind)
        yield tmp  # an OSError of the work itself is the work's, not the output's
        write_owner_mark(tmp, kind, _entries(tmp))
        check_out_target(out_dir, overwrite, kind)  # it may have changed while we worked
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``; an older ``out_dir`` is put back if that fails."""
    old = None
    try:
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{_tag()}")
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    except OSError as exc:
        if old is not None and not out_dir.exists():
            os.replace(old, out_dir)
        raise _os_error(exc, out_dir) from exc
    if old is not None:
        _remove_tree(old)


_STALE = re.compile(r"^\..+\.(?:partial|old)-hybridfuse-(\d{1,10})-[0-9a-f]{16}(?:-|$)")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # not ours to judge: keep it
        return True
    return True


def clean_stale(folder: str | os.PathLike, name: str | None = None) -> list[str]:
    """Remove temporary files and folders left in ``folder`` by runs that died.

    Only names this module makes (``.NAME.partial-hybridfuse-PID-HEX16…``,
    ``.NAME.old-hybridfuse-PID-HEX16``) whose process no longer lives are removed, and
    with ``name`` only those of ``NAME`` (in a folder the project does not own, such as
    the one holding ``--out``); returns their names.
    """
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        if name is not None and not entry.name.startswith(f".{name}."):
            continue
        m = _STALE.match(entry.name)
        if m and not _alive(int(m.group(1))):
            try:
                _remove_tree(entry)
                removed.append(entry.name)
            except OSError:
                pass
    return removed


def check_out_separate(out_dir: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse an output folder that equals or contains any input file or folder."""
    out = Path(os.path.realpath(out_dir))
    for p in inputs:
        real = Path(os.path.realpath(p))
        if real == out or out in real.parents:
            raise UnsafeOutputError(
                f"--out {out_dir} contains the input {p}; write outputs to another folder"
            )


_CASE_ID = re.compile(r"[\w][\w.+\- ]{0,127}")


def check_case_id(case_id: str) -> str:
    """Return ``case_id`` if it is a safe folder name, else raise :class:`UnsafeOutputError`.

    Letters, digits, ``_``, ``.``, ``+``, ``-`` and inner spaces; starts with a letter,
    digit or ``_``; at most 128 characters: no separators, no ``.``/``..``, no absolute
    paths, no trailing dot or space (which some file systems drop).
    """
    if (
        not isinstance(case_id, str)
        or not _CASE_ID.fullmatch(case_id)
        or case_id.endswith((".", " "))
    ):
        raise UnsafeOutputError(
            f"case_id {terminal_text(repr(case_id))} is not a safe folder name "
            "(letters, digits, _ . + - and inner spaces, starting with a letter, digit or _, "
            "at most 128)"
        )
    return case_id


def case_key(case_id: str) -> str:
    """The form under which two case ids name the same folder on any file system."""
    return unicodedata.normalize("NFKC", case_id).casefold()


_SCRIPT_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def script_json(value, **kw) -> str:
    """JSON that is safe inside an HTML ``<script>`` element (no ``</script>``, no U+2028)."""
    return json.dumps(value, allow_nan=False, **kw).translate(_SCRIPT_ESCAPES)


def html_text(value) -> str:
    """Text escaped for HTML element content and quoted attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_cell(value):
    """A CSV cell that a spreadsheet will not run as a formula (OWASP's rule).

    Text starting with ``= + - @`` or a tab/CR is prefixed with ``'``, and control
    characters anywhere in it are written as escapes; numbers pass.
    """
    if not isinstance(value, str):
        return value
    # A bare CR or LF inside a cell would start a new spreadsheet row with a formula.
    value = terminal_text(value)
    return "'" + value if value.startswith(_FORMULA_START) else value


def terminal_text(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters (ESC, BEL, CR, C1, ...) shown as escapes."""
    out = []
    for ch in str(text):
        if ch == "\n" and keep_newlines:
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cf") or ch in "\u2028\u2029":
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


MAX_SETTINGS_FILE_BYTES = 16 * 2**20


def settings_file_problem(path: Path, limit: int = MAX_SETTINGS_FILE_BYTES) -> str | None:
    """Why a small user file (a TOML or CSV of settings) cannot be read, or None.

    Checked before reading: a FIFO blocked forever and ``/dev/zero`` filled the memory.
    """
    if not path.is_file():
        return "not a regular file" if path.exists() else "no such file"
    size = path.stat().st_size
    if size > limit:
        return f"{size / 2**20:.0f} MiB; a settings file may hold at most {limit // 2**20} MiB"
    return None


def one_line(exc: BaseException) -> str:
    """An error's message on one line, control characters escaped.

    Not cut at the first newline: messages start with the file's name, and a name may
    hold a newline (the reason after it was lost).
    """
    return terminal_text(str(exc).strip())


def json_safe(value):
    """``value`` for strict JSON: NaN and infinities as None, NumPy values as Python ones."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return json_safe(value.tolist())  # NumPy arrays and scalars
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    return float(value) if math.isfinite(value) else None


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


#: Hex digits of the sha256 in an input's label: 48 bits, so two inputs of one output
#: never share one.
HASH_DIGITS = 12


def input_label(sha256: str, role: str, position: int | None = None) -> str:
    """``role [position] (sha256 <12 hex>)``: an input named without its file name."""
    where = role if position is None else f"{role} {position}"
    return f"{where} (sha256 {sha256[:HASH_DIGITS]})"


def file_record(
    path: str | os.PathLike,
    *,
    include_phi: bool = False,
    sha256: str | None = None,
    role: str | None = None,
    position: int | None = None,
) -> dict:
    """How every output records an input file: by content, its name only when asked.

    ``input`` (its label, given a ``role``) and ``sha256``; ``file`` (the name) and
    ``path`` only with ``include_phi``.

    Sites name files and folders after the patient (``SMITH_JOHN_20261130.dcm``), so
    without ``include_phi`` an input is known by its content alone: whoever holds the
    file finds it by hashing.
    """
    path = Path(path)
    digest = sha256 or sha256_file(path)
    rec = {} if role is None else {"input": input_label(digest, role, position)}
    rec["sha256"] = digest
    if include_phi:
        rec.update(file=path.name, path=str(path))
    return rec


def recorded_name(record: dict, fallback: str = "input") -> str:
    """What a message calls a recorded input: its file name when kept, else its label.

    Also reads records from before labels (``file`` and ``sha256`` only).
    """
    if not isinstance(record, dict):
        return fallback
    return str(record.get("file") or record.get("input") or fallback)
