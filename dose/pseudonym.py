"""Keyed pseudonyms: HMAC-SHA256 of an identifier under a secret key.

A bare hash of a Study Instance UID or patient ID can be reversed by anyone who holds the
study (hash it and compare); a keyed hash cannot without the key. Outside a registry the
key is per user: a random 32-byte secret in ``$XDG_CONFIG_HOME/hybridfuse/pseudonym.key``
(or ``~/.config/hybridfuse/pseudonym.key``), created mode 0600 on first use;
``HYBRIDFUSE_PSEUDONYM_KEY_FILE`` names another file. A registry keeps its own secret.

Both :mod:`dose` and :mod:`fusion` use it; it imports nothing of the project but
:mod:`dose.errors`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import tempfile
from pathlib import Path

from .errors import DoseInputError

__all__ = ["KEY_ENV", "KEY_BYTES", "key_path", "pseudonym", "user_key"]

#: Environment variable naming the per-user key file (overrides the default location).
KEY_ENV = "HYBRIDFUSE_PSEUDONYM_KEY_FILE"
#: Length of a generated key, in bytes.
KEY_BYTES = 32
# A key shorter than this is refused: it could be guessed.
_MIN_KEY_BYTES = 16


def key_path() -> Path:
    """Where the per-user key lives: ``$HYBRIDFUSE_PSEUDONYM_KEY_FILE`` or the config folder."""
    explicit = os.environ.get(KEY_ENV)
    if explicit:
        return Path(explicit).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "hybridfuse" / "pseudonym.key"


def _read_key(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise DoseInputError(
            f"{path}: cannot read the pseudonym key ({exc.strerror or exc}); "
            f"a link is not followed; set {KEY_ENV} to another file"
        ) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses a folder
        os.close(fd)
        raise DoseInputError(f"{path}: the pseudonym key is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        text = fh.read(4096).strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) < _MIN_KEY_BYTES:
        raise DoseInputError(
            f"{path}: not a pseudonym key (need at least {_MIN_KEY_BYTES} bytes as hex)"
        )
    return key


def _create_key(path: Path) -> None:
    """Write a new random key to ``path`` unless one appears there first (0600, no race)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)
    except OSError as exc:
        raise DoseInputError(
            f"{path}: cannot create the pseudonym key ({exc.strerror or exc}); "
            f"set {KEY_ENV} to a writable file"
        ) from exc
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_hex(KEY_BYTES) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        # link() fails if the name exists, so two first uses agree on one key.
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError as exc:
        raise DoseInputError(
            f"{path}: cannot create the pseudonym key ({exc.strerror or exc})"
        ) from exc
    finally:
        Path(tmp).unlink(missing_ok=True)


def user_key() -> bytes:
    """The per-user pseudonym key, created (random, mode 0600) on first use."""
    path = key_path()
    if not path.exists() and not path.is_symlink():
        _create_key(path)
    return _read_key(path)


def pseudonym(value: str, key: bytes | None = None, *, length: int = 16) -> str:
    """A keyed pseudonym of ``value``: hex HMAC-SHA256 under ``key`` (the user key if None).

    Stable for one key, so the same study or patient gets the same label every time;
    without the key it cannot be recomputed from the identifier.
    """
    if key is None:
        key = user_key()
    digest = hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:length]
