"""Clicks all off the same way check each other; the images must refuse them (issue #15).

Read off a shifted or resized display, every fluoroscopy click is off alike: the pairs fit
one map as well as right clicks do, and the predicted TRE stays small. Only the images
can tell, and both metrics alone moving the answer more than 2 mm refuses it
(registration.verify.intensity_agreement).
"""

from __future__ import annotations

import json

from hybridfuse.fusion.coregister import read_landmarks_csv, register_images
from hybridfuse.fusion.io import read_image
from hybridfuse.registration.options import RegistrationOptions
from tests.registration.test_clicks import _tre_mm


def test_clicks_shifted_alike_are_refused_and_right_ones_kept(family_case_of):
    case = family_case_of(2, 512)  # tuning seed: five beads and a needle tip
    truth = json.loads((case / "truth.json").read_text())
    pair = read_image(case / "fluoro.dcm"), read_image(case / "us.dcm")
    opts = RegistrationOptions().with_values(accept_unverified=True)
    right = register_images(*pair, landmarks=read_landmarks_csv(case / "landmarks.csv"))
    assert right.quality.verdict == "accepted", right.quality.reasons
    assert _tre_mm(right.transform.matrix, truth) < 0.5
    shifted = read_landmarks_csv(case / "landmarks.csv")
    shifted.fixed_xy[:, 0] += 10.0  # 4.5 mm at the isocentre: beyond clicks on beads' reach
    wrong = register_images(*pair, landmarks=shifted, options=opts)
    assert _tre_mm(wrong.transform.matrix, truth) > 2.0  # what it would have accepted
    assert wrong.quality.predicted_tre_mm < 1.0  # the pairs alone cannot tell
    drift = wrong.quality.verification["intensity_only_drift_mm"]
    assert min(drift.values()) > 2.0 and max(drift.values()) < 10.0, drift
    assert wrong.quality.verdict == "refused"
    assert any("clicks all off the same way" in r for r in wrong.quality.reasons)
