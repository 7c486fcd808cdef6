"""The committed sample case: intact, and still what the generator writes for its seed."""

import numpy as np
import pytest

from hybridfuse.testdata import sample_case, verify_sample
from hybridfuse.testdata.phantom import generate_procedure, load_truth


def test_sample_files_match_their_digests():
    assert verify_sample() == []
    assert (sample_case() / "truth.json").is_file()


def test_sample_is_reproducible_from_its_seed(tmp_path):
    committed = load_truth(sample_case())
    fresh = generate_procedure(
        tmp_path / "again", seed=committed["seed"], procedure=committed["procedure"]
    )
    for a, b in zip(committed["pairs"], fresh["pairs"], strict=True):
        np.testing.assert_allclose(
            a["moving_to_fixed_pixel"], b["moving_to_fixed_pixel"], rtol=1e-12
        )
    assert committed["dose"]["delivered"] == pytest.approx(fresh["dose"]["delivered"])
