"""Hardening of the dose commands: outputs, inputs, registry, de-identification (issue #13)."""

from __future__ import annotations

import hashlib
import hmac
import stat
import subprocess
import sys

import pytest

from dose.errors import DoseInputError
from dose.pseudonym import KEY_ENV, key_path, pseudonym, user_key


@pytest.fixture(autouse=True)
def _own_key(tmp_path, monkeypatch):
    """Every test uses its own pseudonym key file, never the user's."""
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "keys" / "pseudonym.key"))


# --- keyed pseudonyms -----------------------------------------------------------------------


def test_user_key_created_private_and_stable(tmp_path):
    key = user_key()
    path = key_path()
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert user_key() == key
    assert not [p for p in path.parent.iterdir() if p.name != path.name]


def test_pseudonym_is_keyed_not_a_bare_hash():
    uid = "1.2.826.0.1.3680043.8.498.1"
    p = pseudonym(uid)
    assert p == hmac.new(user_key(), uid.encode(), hashlib.sha256).hexdigest()[:16]
    assert p not in hashlib.sha256(uid.encode()).hexdigest()
    assert pseudonym(uid, b"k" * 32) != p
    assert pseudonym(uid, b"k" * 32) == pseudonym(uid, b"k" * 32)


def test_key_location_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert key_path() == tmp_path / "cfg" / "hybridfuse" / "pseudonym.key"
    user_key()
    assert key_path().is_file()


def test_key_file_link_or_garbage_refused(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("a" * 64)
    link = tmp_path / "link.key"
    link.symlink_to(victim)
    monkeypatch.setenv(KEY_ENV, str(link))
    with pytest.raises(DoseInputError, match="link"):
        user_key()
    bad = tmp_path / "bad.key"
    bad.write_text("not hex")
    monkeypatch.setenv(KEY_ENV, str(bad))
    with pytest.raises(DoseInputError, match="not a pseudonym key"):
        user_key()


def test_concurrent_first_use_agrees_on_one_key(tmp_path):
    code = "from dose.pseudonym import user_key; print(user_key().hex())"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    keys = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(keys) == 1 and len(keys.pop()) == 64
