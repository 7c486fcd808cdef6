"""The probe's silhouette made safe: only inside the exposed field, no arc faces by default,
and its placements judged with the beads' answer at one cost standard."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hybridfuse.fusion.probe_silhouette import judge
from hybridfuse.registration import RegistrationOptions
from hybridfuse.registration.exposed_field import exposed_field
from hybridfuse.registration.hypotheses import Candidate
from hybridfuse.registration.silhouette import Face, detect_silhouette
from hybridfuse.testdata.phantom.probe_xray import fluoroscopy_with_probe
from tests.conftest import REALDATA

RF = REALDATA / "images" / "orthanc-tests__KarstenHilbertRF.dcm"


def _disc_image(text: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A noisy disc field in a constant black border, with a burned-in label in the border."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:200, 0:240]
    disc = np.hypot(xx - 120, yy - 100) <= 90
    img = np.where(disc, rng.normal(500.0, 20.0, disc.shape), 0.0)
    if text:
        img[2:12, 2:40] = 900.0  # a label, off the field
    return img, disc


def test_exposed_field_is_the_disc_inside_the_constant_border():
    img, disc = _disc_image()
    field = exposed_field(img, None)
    assert field is not None
    assert not (field & ~disc).any()  # nothing outside the disc, the label included
    assert field.sum() > 0.85 * disc.sum()  # only the soft edge's margin is shrunk off
    # A given (shutter) mask bounds it further.
    half = np.zeros_like(disc)
    half[:, :120] = True
    assert not (exposed_field(img, half) & ~half).any()


def test_exposed_field_unknown_without_a_constant_border():
    img = np.random.default_rng(2).normal(500.0, 20.0, (120, 120))
    assert exposed_field(img, None) is None
    given = np.ones(img.shape, bool)
    assert exposed_field(img, given) is given


@pytest.mark.skipif(not RF.exists(), reason=f"{RF} is absent: real files are read from ../shared")
def test_real_field_circle_and_bone_edges_are_not_faces():
    from hybridfuse.fusion import read_image

    f = read_image(RF).gray(0)  # no shutter attributes: the field circle is in the pixels
    field = exposed_field(f, None)
    assert field is not None and 0.7 < field.mean() < 0.9
    # Calibrations under which the unmasked image fired (measured): on the field circle
    # and on bone edges. Inside the field read from the pixels, nothing.
    for iso_mm, width_mm in ((0.4, 25.0), (0.2, 45.0)):
        face = Face(width_mm, None, (100.0, 0.0), (0.2, 0.2))
        assert detect_silhouette(f, None, iso_mm, face, dense_bright=True) is not None
        assert detect_silhouette(f, field, iso_mm, face, dense_bright=True) is None


def test_arc_faces_are_looked_for_only_when_asked():
    case = fluoroscopy_with_probe(8)  # a linear probe, found where drawn
    # The same straight bar under an arc of a huge radius (flat over the face).
    arc = Face(case["face_width_mm"], 1e5, case["face_centre_xy"], case["us_spacing_mm"])
    args = (case["image"], case["mask"], case["iso_mm"], arc)
    assert detect_silhouette(*args, convex_faces=True) is not None
    assert detect_silhouette(*args) is None


class _Bench:
    """Costs and distances (mm) keyed by each end's x translation (px = mm here)."""

    def __init__(self, costs: dict):
        self.costs = costs

    def standard_cost(self, matrix: np.ndarray) -> float:
        return self.costs[float(matrix[0, 2])]

    def distance_mm(self, a: np.ndarray, b: np.ndarray) -> float:
        return abs(float(a[0, 2] - b[0, 2]))


def _cand(x: float, verdict: str | None, items: int = 2) -> Candidate:
    """A placement whose run ended at x (None: the run failed)."""
    m = np.eye(3)
    m[0, 2] = x
    result = None
    if verdict is not None:
        result = SimpleNamespace(quality=SimpleNamespace(verdict=verdict), transform=Transform(m))
    return Candidate(m, 0.2, items, result=result)


class Transform(SimpleNamespace):
    def __init__(self, matrix):
        super().__init__(matrix=matrix)


OPTS = RegistrationOptions()  # basin 1.6 mm, ambiguity gate 12 %


def test_silhouette_placement_taken_when_the_other_is_clearly_worse():
    cands = [_cand(0.0, "accepted"), _cand(40.0, "refused")]
    winner, why = judge(cands, [], _Bench({0.0: 1.0, 40.0: 1.5}), OPTS)
    assert winner is cands[0] and why is None


def test_a_beads_answer_close_in_cost_elsewhere_refuses_the_silhouette():
    cands = [_cand(0.0, "accepted"), _cand(40.0, "refused")]
    beads = [_cand(25.0, "refused", items=3)]
    bench = _Bench({0.0: 1.0, 40.0: 1.5, 25.0: 1.05})  # 5 % worse, 25 mm away
    winner, why = judge(cands, beads, bench, OPTS)
    assert winner is None and "25.0 mm apart" in why and "5% worse" in why
    # The beads' answer in the silhouette's basin, or clearly worse, does not refuse it.
    for x, cost in ((1.0, 1.05), (25.0, 1.3)):
        bench = _Bench({0.0: 1.0, 40.0: 1.5, x: cost})
        assert judge(cands, [_cand(x, "refused", items=3)], bench, OPTS)[0] is cands[0]


def test_a_handedness_whose_run_failed_is_not_ruled_out():
    cands = [_cand(0.0, "accepted"), _cand(40.0, None)]
    winner, why = judge(cands, [], _Bench({0.0: 1.0}), OPTS)
    assert winner is None and "did not end" in why
    winner, why = judge(
        [_cand(0.0, "refused"), _cand(40.0, "refused")], [], _Bench({0.0: 1.0, 40.0: 1.2}), OPTS
    )
    assert winner is None and "ends verified" in why


@pytest.mark.parametrize("singled_out", [False, None])
def test_a_few_item_match_beaten_by_its_rivals_is_not_handed_to_the_silhouette(
    monkeypatch, singled_out
):
    """As where the beads' placements were judged: a rival the few-item judgement found
    holds an answer that the silhouette's judgement (the beads' answer its only rival)
    would not see. A refusal of another kind still lets the silhouette try."""
    from hybridfuse.fusion import probe_silhouette
    from hybridfuse.registration.errors import UnverifiedResultError
    from hybridfuse.registration.guards import Quality

    tried = []
    monkeypatch.setattr(probe_silhouette, "_silhouette", lambda *a: tried.append(a) or (None, None))
    verification = {} if singled_out is None else {"judged_match": {"singled_out": False}}
    quality = Quality(
        verdict="refused",
        reasons=["unverified: a rival"],
        local_scale_min=1.0,
        local_scale_max=1.0,
        edge_on=False,
        verification=verification,
    )
    refused = SimpleNamespace(quality=quality, transform=Transform(np.eye(3)), options={})

    def run(**kw):
        raise UnverifiedResultError("refused: a rival", refused)

    with pytest.raises(UnverifiedResultError):
        probe_silhouette.register_or_silhouette(run, None, None, OPTS)
    assert len(tried) == (0 if singled_out is False else 1)


def test_no_silhouette_is_looked_for_where_no_field_is_known(tmp_path, monkeypatch):
    """The probe is drawn and found; with neither shutter attributes nor a constant
    border to give the field, the field's edge could read as a face: none is looked for."""
    from hybridfuse.fusion import probe_silhouette, read_image
    from hybridfuse.testdata.phantom.family import family_case

    case = family_case(9, tmp_path / "case", probe_in_fluoro=True, max_detector_px=320)
    fixed, moving = read_image(case / "fluoro.dcm"), read_image(case / "us.dcm")
    assert probe_silhouette.find_silhouette(fixed, moving, OPTS) is not None
    monkeypatch.setattr(probe_silhouette, "exposed_field", lambda img, mask: None)
    assert probe_silhouette.find_silhouette(fixed, moving, OPTS) is None
