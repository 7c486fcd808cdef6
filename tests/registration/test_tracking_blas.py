"""The BLAS thread limit tracking runs under (registration._blas.one_blas_thread)."""

import threading

import numpy as np
import pytest

from hybridfuse.registration import _blas
from hybridfuse.registration import tracking as tracking_module


@pytest.fixture
def three_threads():
    """Every OpenBLAS found set to 3 threads (not 1, so a limit shows), restored after."""
    setters = _blas._openblas_setters()
    if not setters:
        pytest.skip("no OpenBLAS with openblas_set_num_threads_local is loaded here")
    before = [s(3) for s in setters]
    yield len(setters)
    for s, old in zip(setters, before, strict=True):
        s(old)


def test_one_thread_inside_and_restored_after_nesting(three_threads):
    n = three_threads
    assert _blas.blas_thread_counts() == [3] * n
    with _blas.one_blas_thread():
        assert _blas.blas_thread_counts() == [1] * n
        with _blas.one_blas_thread():
            assert _blas.blas_thread_counts() == [1] * n
        # The inner block's exit must not restore while the outer one still runs.
        assert _blas.blas_thread_counts() == [1] * n
    assert _blas.blas_thread_counts() == [3] * n


def test_overlapping_users_in_threads_restore_the_count_once(three_threads):
    # A enters, B enters, A leaves (B still inside: still 1), B leaves: back to 3.
    n = three_threads
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def user_a():
        with _blas.one_blas_thread():
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def user_b():
        a_in.wait(10)
        with _blas.one_blas_thread():
            b_in.set()
            a_out.wait(10)
            seen["b after a left"] = _blas.blas_thread_counts()

    threads = [threading.Thread(target=user_a), threading.Thread(target=user_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen["b after a left"] == [1] * n
    assert _blas.blas_thread_counts() == [3] * n


def test_an_exception_inside_still_restores(three_threads):
    with pytest.raises(RuntimeError), _blas.one_blas_thread():
        raise RuntimeError("inside")
    assert _blas.blas_thread_counts() == [3] * three_threads


def test_track_sequence_registers_every_frame_on_one_blas_thread(three_threads, monkeypatch):
    seen = []

    def fake_register(fixed, moving, **kw):
        seen.append(_blas.blas_thread_counts())
        raise _Stop

    monkeypatch.setattr(tracking_module, "register", fake_register)
    with pytest.raises(_Stop):
        tracking_module.track_sequence([np.zeros((8, 8))], [np.zeros((8, 8))], [(0, 0)], np.eye(3))
    assert seen == [[1] * three_threads]
    assert _blas.blas_thread_counts() == [3] * three_threads


class _Stop(Exception):
    pass
