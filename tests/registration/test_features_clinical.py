"""Beads and needles as clinical images show them: comet tails, sectors, noise, bit depths.

The images are drawn here with known truth, in a way of their own (not the project's
phantom): speckle from a Rayleigh field, log compression, each bead a bright arc from its
near wall followed by reverberation copies along the beam, the needle a bright line with
fainter parallel copies beneath it; fluoroscopy with Poisson noise, a dark needle and a
dark bone-like step edge.
"""

import numpy as np
import pytest

from hybridfuse.registration.correspond import (
    AmbiguousMatchError,
    Line,
    NoFeaturesError,
    match_points,
)
from hybridfuse.registration.features import beam_apex, detect_beads
from hybridfuse.registration.initial import auto_start
from hybridfuse.registration.needle import detect_needle

SPACING = 0.2  # mm per pixel, both axes


def _speckle(shape, rng, level=1.0):
    return level * np.abs(rng.normal(size=shape) + 1j * rng.normal(size=shape)) / np.sqrt(2)


def _to_display(amplitude, bits: int, dynamic_range_db: float = 50.0):
    """Log compression to 8 or 16 bits, as a scanner stores its B-mode."""
    db = 20 * np.log10(np.maximum(amplitude, 1e-6) / amplitude.max())
    top = 255 if bits == 8 else 65535
    return np.rint(np.clip(db / dynamic_range_db + 1, 0, 1) * top).astype(
        np.uint8 if bits == 8 else np.uint16
    )


def _echo_image(beads, shape, rng, apex=None, radius_mm=1.0, bits=8, needle=None):
    """Ultrasound amplitude with beads (centres x, y px) and their comet tails, displayed.

    Each bead: an arc on its near wall (the half of its circle facing the probe) and six
    copies of it 2.2 radii apart down the beam, each 0.65 as bright; beneath, a shadow.
    The echoes are blurred by a point-spread function (0.2 mm axial, 0.4 mm lateral).
    """
    from scipy.ndimage import gaussian_filter

    yy, xx = np.indices(shape, dtype=float)
    amp = _speckle(shape, rng)
    reflect = np.zeros(shape)
    r = radius_mm / SPACING
    for cx, cy in beads:
        b = np.array([0.0, 1.0]) if apex is None else np.array([cx - apex[0], cy - apex[1]])
        b /= np.linalg.norm(b)
        u = np.array([-b[1], b[0]])
        along = (xx - cx) * b[0] + (yy - cy) * b[1]
        across = (xx - cx) * u[0] + (yy - cy) * u[1]
        amp[(np.abs(across) < r) & (along > 0)] *= 0.3
        for k in range(7):
            a_k = along - 2.2 * r * k  # the k-th copy of the wall, deeper along the beam
            dist = np.hypot(a_k, across)
            reflect += 40.0 * 0.65**k * (np.abs(dist - r) < 0.6) * (a_k < 0.3 * r)
    if needle is not None:
        reflect += _line_amp(shape, *needle, 30.0)
        for k in range(1, 4):
            shifted = [np.asarray(p) + [0, 6 * k] for p in needle]
            reflect += _line_amp(shape, *shifted, 30.0 * 0.3**k)
    return _to_display(amp + gaussian_filter(reflect, (1.0, 2.0)), bits)


def _line_amp(shape, a, b, value, width_px=2.0):
    yy, xx = np.indices(shape, dtype=float)
    a, b = np.asarray(a, float), np.asarray(b, float)
    ab = b - a
    t = np.clip(((xx - a[0]) * ab[0] + (yy - a[1]) * ab[1]) / (ab @ ab), 0, 1)
    d = np.hypot(xx - a[0] - t * ab[0], yy - a[1] - t * ab[1])
    return value * np.exp(-((d / width_px) ** 2))


def _fluoro(beads, shape, rng, radius_mm=1.0, needle=None, dose=400.0):
    """Transmitted counts (Poisson) through discs, a needle and a bone edge; dense = dark."""
    yy, xx = np.indices(shape, dtype=float)
    mu = 0.3 + 0.4 * (xx > shape[1] * 0.8)  # a bone's edge: a step, not a ridge
    for cx, cy in beads:
        mu += 1.2 * (np.hypot(xx - cx, yy - cy) <= radius_mm / SPACING)
    if needle is not None:
        mu += _line_amp(shape, *needle, 1.0, width_px=1.5)
    return rng.poisson(dose * np.exp(-mu)).astype(float)


def _nearest(found, truth):
    return np.linalg.norm(found[None, :, :] - np.asarray(truth)[:, None, :], axis=2).min(axis=1)


@pytest.mark.parametrize("bits", [8, 16])
def test_beads_with_comet_tails_are_found_at_their_centres(bits):
    rng = np.random.default_rng(3)
    beads = [(60.0, 50.0), (140.0, 70.0), (100.0, 130.0)]
    img = _echo_image(beads, (240, 200), rng, bits=bits)
    # The radius is the fluoroscopy's (auto_start): an echo with a tail does not show it.
    found = detect_beads(img, None, (SPACING, SPACING), bright=True, near_wall=True, radius_mm=1)
    # Each bead once, its centre within about 1 px, the three strongest; weak speckle
    # spots may follow, but none on a tail (the six echoes beneath each bead).
    assert _nearest(found.xy[:3], beads).max() < 1.5
    for x, y in found.xy[3:]:
        assert not any(abs(x - bx) < 7.5 and y > by for bx, by in beads), (x, y)


def test_a_bead_in_a_sector_image_is_found_along_its_own_beam():
    rng = np.random.default_rng(4)
    apex = (150.0, -60.0)
    beads = [(70.0, 120.0), (220.0, 150.0), (150.0, 90.0)]  # 40, 33 and 0 degrees off axis
    img = _echo_image(beads, (260, 300), rng, apex=apex)
    yy, xx = np.indices(img.shape)
    angle = np.degrees(np.arctan2(xx - apex[0], yy - apex[1]))
    sector = (np.abs(angle) < 45) & (np.hypot(xx - apex[0], yy - apex[1]) > 70)
    found_apex = beam_apex(sector)
    assert np.hypot(found_apex[0] - apex[0], found_apex[1] - apex[1]) < 5.0
    # The radius is the fluoroscopy's (auto_start): an echo with a tail does not show it.
    kw = {"bright": True, "near_wall": True, "radius_mm": 1.0}
    found = detect_beads(img, sector, (SPACING, SPACING), beam_apex_xy=found_apex, **kw)
    # The three beads are the strongest (speckle at depth gives weak decoys below them).
    assert np.all(found.strength[3:] < 0.5 * found.strength[2])
    assert _nearest(found.xy[:3], beads).max() < 1.5


def test_a_rectangle_has_no_apex():
    mask = np.zeros((100, 80), bool)
    mask[10:90, 5:75] = True
    assert beam_apex(mask) is None


NEEDLE_US = ((30.0, 20.0), (150.0, 110.0))  # tail (enters at the top), tip
NEEDLE_FL = ((200.0, 10.0), (80.0, 150.0))


def test_the_needle_tip_is_found_in_both_images():
    rng = np.random.default_rng(5)
    us = _echo_image([], (200, 220), rng, needle=NEEDLE_US)
    mask = np.zeros(us.shape, bool)
    mask[18:, :] = True  # the skin line: the needle comes in from above
    n_us = detect_needle(us, mask, (SPACING, SPACING), bright=True)
    assert n_us is not None and n_us.tip_known
    assert np.hypot(*(n_us.tip_xy - NEEDLE_US[1])) < 2.5
    fl = _fluoro([], (220, 280), rng, needle=NEEDLE_FL)
    fmask = np.zeros(fl.shape, bool)
    fmask[25:, :] = True  # the collimator cuts the shaft: the end inside is the tip
    n_fl = detect_needle(fl, fmask, (SPACING, SPACING), bright=False)
    assert n_fl is not None and n_fl.tip_known
    assert np.hypot(*(n_fl.tip_xy - NEEDLE_FL[1])) < 2.5


def test_speckle_and_a_bone_edge_hold_no_needle_and_no_bead():
    rng = np.random.default_rng(6)
    us = _echo_image([], (200, 220), rng)
    assert detect_needle(us, None, (SPACING, SPACING), bright=True) is None
    assert len(detect_beads(us, None, (SPACING, SPACING), bright=True, near_wall=True)) == 0
    fl = _fluoro([], (200, 220), rng)
    assert detect_needle(fl, None, (SPACING, SPACING), bright=False) is None
    assert len(detect_beads(fl, None, (SPACING, SPACING), bright=False)) == 0


def _rot(angle_deg, mirror):
    t = np.radians(angle_deg)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return r @ (np.diag([-1.0, 1.0]) if mirror else np.eye(2))


@pytest.mark.parametrize("angle_deg, mirror", [(0.0, False), (120.0, True), (-75.0, False)])
def test_two_beads_and_a_needle_match(angle_deg, mirror):
    lin, shift = _rot(angle_deg, mirror) * 1.03, np.array([30.0, -12.0])
    beads = np.array([[10.0, 12.0], [31.0, 25.0]])
    tip, tail = np.array([22.0, 30.0]), np.array([5.0, 2.0])

    def f(p):
        return p @ lin.T + shift

    decoys = np.array([[80.0, 5.0], [-20.0, 40.0]])
    m = match_points(
        beads,
        np.vstack([decoys, f(beads)]),
        moving_line=Line(tip, tail),
        fixed_line=Line(f(tip), f(tail) + 0.3 * (f(tail) - f(tip)), tip_known=False),
    )
    assert m.mirrored is mirror
    assert abs((m.rotation_deg - angle_deg + 180) % 360 - 180) < 1.0
    assert list(m.fixed_index) == [2, 3]
    assert m.needle_line and m.needle_tip
    assert np.linalg.norm(m.needle_tip_mm - f(tip)) < 0.1
    # Without the needle two beads are too few.
    with pytest.raises(NoFeaturesError, match="2 beads detected in the ultrasound"):
        match_points(beads, f(beads))


def test_two_beads_on_the_needle_line_cannot_tell_the_mirror_image():
    # Beads on the needle's own line: mirrored about it, everything lands the same, and
    # the region beside the line is placed differently: refused, not guessed.
    beads = np.array([[0.0, 0.0], [12.0, 0.0]])
    line = Line(np.array([25.0, 0.0]), np.array([-10.0, 0.0]))
    corners = np.array([[-5.0, -20.0], [30.0, -20.0], [30.0, 20.0], [-5.0, 20.0]])
    shift = np.array([40.0, 10.0])
    with pytest.raises(AmbiguousMatchError, match="two different ways"):
        match_points(
            beads,
            beads + shift,
            moving_line=line,
            fixed_line=Line(line.tip + shift, line.tail + shift),
            extent_mm=corners,
        )


def test_auto_start_from_two_beads_and_the_needle():
    rng = np.random.default_rng(7)
    us_beads = np.array([[40.0, 150.0], [190.0, 170.0]])  # away from the needle
    lin = _rot(35.0, True)
    shift = np.array([160.0, 150.0]) - lin @ np.array([110.0, 100.0])  # into the field

    def f(p):
        return np.asarray(p, float) @ lin.T + shift

    us = _echo_image(us_beads, (200, 220), rng, needle=NEEDLE_US)
    umask = np.zeros(us.shape, bool)
    umask[18:, :] = True
    fl_needle = (f(NEEDLE_US[0]) + 0.5 * (f(NEEDLE_US[0]) - f(NEEDLE_US[1])), f(NEEDLE_US[1]))
    fl = _fluoro(f(us_beads), (300, 320), rng, needle=fl_needle)
    found = auto_start(
        fl,
        us,
        fixed_spacing_mm=(SPACING, SPACING),
        moving_spacing_mm=(SPACING, SPACING),
        moving_mask=umask,
    )
    assert found.match.mirrored and found.match.needle_line
    lm = found.landmarks
    assert lm.names == ("auto_bead0", "auto_bead1", "auto_needle_tip")
    # Within 0.6 mm: the ultrasound centres lie one radius below the wall, and the radius
    # measured on the fluoroscopy's discs reads about 20 % large here.
    assert np.abs(f(lm.moving_xy) - lm.fixed_xy).max() < 3.0


def test_nothing_detectable_is_refused_naming_what_was_found():
    rng = np.random.default_rng(8)
    with pytest.raises(NoFeaturesError, match="0 beads detected in the ultrasound"):
        auto_start(
            _fluoro([], (200, 220), rng),
            _echo_image([], (200, 220), rng),
            fixed_spacing_mm=(SPACING, SPACING),
            moving_spacing_mm=(SPACING, SPACING),
        )
