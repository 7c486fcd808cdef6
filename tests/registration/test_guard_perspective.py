"""The perspective guard: an answer's perspective must be one an X-ray source gives a plane."""

from __future__ import annotations

import numpy as np
import pytest

from hybridfuse.registration import Landmarks, RegistrationOptions, register
from hybridfuse.registration.errors import UnverifiedResultError
from hybridfuse.registration.plausible import perspective_figures, perspective_reason

LIMIT = RegistrationOptions().guards.max_depth_slope

SID, SOD, DET_MM, US_MM = 1100.0, 750.0, 0.3, 0.2
ISO_MM = DET_MM * SOD / SID
FIELD = (40.0, 30.0, 360.0, 330.0)  # ultrasound region x0, y0, x1, y1 (px)
PRINCIPAL = 511.5  # the beam's axis: the centre of a 1024 x 1024 fluoroscopy


def plane_homography(
    tilt_deg, azimuth_deg=30.0, spin_deg=20.0, offset_mm=(0, 0, 0), *, mirror=False, sod=SOD
):
    """Ultrasound px → fluoroscopy px of a plane seen by a point source (the physics)."""
    spin, az, tilt = np.radians([spin_deg, azimuth_deg, tilt_deg])
    a = np.array([np.cos(spin), np.sin(spin), 0.0])
    b = np.array([-np.sin(spin), np.cos(spin), 0.0]) * (-1 if mirror else 1)
    axis = np.array([np.cos(az), np.sin(az), 0.0])  # tilt about this line of the detector
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(tilt) * k + (1 - np.cos(tilt)) * k @ k
    a, b = rot @ a, rot @ b
    centre = np.array([(FIELD[0] + FIELD[2]) / 2, (FIELD[1] + FIELD[3]) / 2])
    origin = np.array([0.0, 0.0, sod]) + offset_mm - US_MM * (centre[0] * a + centre[1] * b)
    plane = np.column_stack([US_MM * a, US_MM * b, origin])  # (x, y, 1) → source frame mm
    # The detector's pixel keeps ISO_MM at the isocentre whatever ``sod`` is.
    det_mm = ISO_MM * SID / sod
    k_det = np.array([[SID / det_mm, 0, PRINCIPAL], [0, SID / det_mm, PRINCIPAL], [0, 0, 1]])
    h = k_det @ plane
    return h / h[2, 2]


def bent(h, strength):
    """``h`` with extra perspective about the field's centre, its map there unchanged."""
    cx, cy = (FIELD[0] + FIELD[2]) / 2, (FIELD[1] + FIELD[3]) / 2
    shift = np.array([[1.0, 0, cx], [0, 1, cy], [0, 0, 1]])
    p = np.array([[1.0, 0, 0], [0, 1, 0], [strength, 0.4 * strength, 1]])
    return h @ shift @ p @ np.linalg.inv(shift)


def figures(h, sod=SOD):
    x0, y0, x1, y1 = FIELD
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    return perspective_figures(h, centre, corners, (US_MM / ISO_MM,) * 2, ISO_MM, sod, LIMIT)


@pytest.mark.parametrize("tilt", [0.0, 8.0, 25.0, 50.0])
@pytest.mark.parametrize("mirror", [False, True])
def test_a_true_plane_climbs_by_the_sine_of_its_tilt_anywhere_in_the_beam(tilt, mirror):
    for offset in [(0, 0, 0), (60, -40, 50), (100, 100, 0), (-110, 0, -60)]:
        for azimuth in (0.0, 75.0, 120.0):
            f = figures(plane_homography(tilt, azimuth, offset_mm=offset, mirror=mirror))
            # Off the beam's axis the larger local scale grows by up to sqrt(1 + q^2).
            assert f["depth_slope"] == pytest.approx(np.sin(np.radians(tilt)), abs=0.02)
            assert perspective_reason(f) is None


@pytest.mark.parametrize("true_sod", [520.0, 750.0, 1150.0])
def test_without_the_source_distance_the_slope_is_understated(true_sod):
    h = plane_homography(40.0, offset_mm=(80, -60, 0), sod=true_sod)
    f = figures(h, sod=None)
    assert f["source_object_from"] == "shortest assumed"
    assert f["depth_slope"] <= figures(h, sod=true_sod)["depth_slope"] + 1e-9


def test_perspective_steeper_than_any_plane_is_refused():
    truth = plane_homography(10.0)
    f = figures(bent(truth, 4e-4))
    assert f["depth_slope"] > LIMIT
    # The map at the centre is the true one: only the perspective says it is wrong.
    assert np.allclose(_jac(bent(truth, 4e-4)), _jac(truth))
    reason = perspective_reason(f)
    assert reason and "no X-ray source gives a plane this perspective" in reason
    assert perspective_reason(figures(bent(truth, 1e-5))) is None


def _jac(h, eps=1e-3):
    c = np.array([(FIELD[0] + FIELD[2]) / 2, (FIELD[1] + FIELD[3]) / 2])

    def at(p):
        u = h @ [p[0], p[1], 1.0]
        return u[:2] / u[2]

    return np.column_stack([(at(c + d) - at(c - d)) / (2 * eps) for d in np.eye(2) * eps])


def _register(h, **extra):
    """Landmarks only, exact pairs from ``h`` spread over the field, with the calibration."""
    x0, y0, x1, y1 = FIELD
    gx, gy = np.meshgrid(np.linspace(x0 + 20, x1 - 20, 3), np.linspace(y0 + 20, y1 - 20, 3))
    moving = np.column_stack([gx.ravel(), gy.ravel()])
    fixed_xy = np.c_[moving, np.ones(len(moving))] @ h.T
    lm = Landmarks(moving, fixed_xy[:, :2] / fixed_xy[:, 2:], tuple(f"p{k}" for k in range(9)))
    mask = np.zeros((380, 400), bool)
    mask[int(y0) : int(y1) + 1, int(x0) : int(x1) + 1] = True
    opts = RegistrationOptions(metric=None).with_values(**extra)
    return register(
        np.zeros((1024, 1024)),
        np.zeros((380, 400)),
        moving_mask=mask,
        landmarks=lm,
        options=opts,
        expected_scale=US_MM / ISO_MM,
        fixed_spacing_mm=ISO_MM,
        source_object_mm=SOD,
    )


def test_register_refuses_landmarks_that_bend_the_perspective():
    truth = plane_homography(10.0)
    good = _register(truth)
    assert good.quality.verdict == "accepted"
    assert good.model == "projective"
    check = good.quality.verification["perspective"]
    assert check["tilt_from_perspective_deg"] == pytest.approx(10.0, abs=0.5)
    assert check["source_object_from"] == "fluoroscopy"

    with pytest.raises(UnverifiedResultError, match="no X-ray source gives a plane"):
        _register(bent(truth, 4e-4))
    marked = _register(bent(truth, 4e-4), accept_unverified=True)
    assert marked.quality.verdict == "refused" and marked.quality.accepted_unverified
    # max_depth_slope none: the figures are recorded, nothing is refused for them.
    recorded = _register(bent(truth, 4e-4), max_depth_slope=None)
    assert recorded.quality.verdict == "accepted"
    assert recorded.quality.verification["perspective"]["depth_slope"] > LIMIT


def test_without_the_isocentre_pixel_size_nothing_is_claimed():
    h = plane_homography(10.0)
    x0, y0, x1, y1 = FIELD
    moving = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [200, 180], [120, 250]], float)
    fixed_xy = np.c_[moving, np.ones(6)] @ h.T
    lm = Landmarks(moving, fixed_xy[:, :2] / fixed_xy[:, 2:], tuple("abcdef"))
    res = register(
        np.zeros((1024, 1024)),
        np.zeros((380, 400)),
        landmarks=lm,
        options=RegistrationOptions(metric=None),
        expected_scale=US_MM / ISO_MM,
    )
    assert "perspective" not in (res.quality.verification or {})
