"""``register_images``' ``wall_time_s`` covers detection and judgement, not only the optimiser."""

import time
from types import SimpleNamespace

import pytest

from hybridfuse.fusion import coregister
from hybridfuse.registration.errors import UnverifiedResultError

SLEEP_S = 0.25


def _slow_register(refuse: bool):
    def run(*args, **kwargs):
        time.sleep(SLEEP_S)  # stands for detection, matching and judgement around the optimiser
        result = SimpleNamespace(wall_time_s=0.01)  # what register() alone measured
        if refuse:
            raise UnverifiedResultError("refused", result)
        return result

    return run


@pytest.mark.parametrize("refuse", [False, True])
def test_wall_time_covers_the_whole_registration(monkeypatch, refuse):
    monkeypatch.setattr(coregister, "_register_frames", _slow_register(refuse))
    monkeypatch.setattr(coregister, "_silhouette_on", lambda options: False)
    monkeypatch.setattr(coregister, "check_register_memory", lambda fixed, moving: None)
    if refuse:
        with pytest.raises(UnverifiedResultError) as info:
            coregister.register_images(None, None)
        result = info.value.result
    else:
        result = coregister.register_images(None, None)
    assert result.wall_time_s >= SLEEP_S
