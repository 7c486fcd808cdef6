"""Cone-beam projection and plane-induced homographies, against direct 3D geometry."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from hybridfuse.registration import (
    ConeBeamGeometry,
    IllPosedGeometryError,
    ImagePlane,
    apply_homography,
    check_not_edge_on,
    plane_homography,
    plane_obliquity_deg,
    rotation_from_axes,
)


def lateral_geometry(**kw) -> ConeBeamGeometry:
    args = dict(
        sid_mm=1000.0,
        sod_mm=750.0,
        detector_spacing_mm=(0.37, 0.37),
        detector_shape=(512, 512),
        world_to_carm=rotation_from_axes([0, 0, 1], [0, 1, 0]),
    )
    args.update(kw)
    return ConeBeamGeometry(**args)


def test_isocentre_projects_to_principal_point():
    geom = lateral_geometry()
    assert_allclose(geom.project(np.zeros((1, 3))), [[255.5, 255.5]])


def test_magnification_at_isocentre_plane():
    geom = lateral_geometry()
    # 10 mm along the detector column axis at the isocentre spans 10 * SID/SOD mm on the
    # detector, i.e. 10 * (1000/750) / 0.37 pixels.
    p = geom.project(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 10.0]]))
    assert_allclose(p[1, 0] - p[0, 0], 10 * (1000 / 750) / 0.37, rtol=1e-12)
    assert_allclose(geom.isocenter_spacing_mm, (0.37 * 0.75, 0.37 * 0.75))


def test_point_nearer_the_source_is_magnified_more():
    geom = lateral_geometry()  # beam along -x: source at +x
    near = geom.project(np.array([[50.0, 0.0, 0.0], [50.0, 0.0, 10.0]]))
    far = geom.project(np.array([[-50.0, 0.0, 0.0], [-50.0, 0.0, 10.0]]))
    assert near[1, 0] - near[0, 0] > far[1, 0] - far[0, 0]


def test_pixel_rays_pass_through_projected_points(rng):
    geom = lateral_geometry(principal_point_px=(250.0, 260.0))
    pts = rng.uniform(-60, 60, size=(20, 3))
    xy = geom.project(pts)
    origin, dirs = geom.pixel_rays(xy)
    to_pts = pts - origin
    to_pts /= np.linalg.norm(to_pts, axis=1, keepdims=True)
    assert_allclose(dirs, to_pts, atol=1e-12)


def test_plane_homography_matches_projection_of_plane_points(rng):
    geom = lateral_geometry()
    tilt = np.radians(12.0)
    plane = ImagePlane(
        origin_mm=[20.0, -55.0, -24.0],
        axis_x=[np.sin(tilt), 0.0, np.cos(tilt)],
        axis_y=[0.0, 1.0, 0.0],
        spacing_mm=(0.15, 0.15),
    )
    hom = plane_homography(geom, plane)
    xy = rng.uniform(0, 400, size=(50, 2))
    assert_allclose(apply_homography(hom, xy), geom.project(plane.pixel_to_world(xy)), atol=1e-9)
    # A tilted plane gives a genuinely projective map (non-zero perspective row).
    assert abs(hom[2, 0]) > 1e-7


def test_world_to_pixel_inverts_pixel_to_world(rng):
    plane = ImagePlane([1.0, 2.0, 3.0], [1.0, 0.2, 0.0], [0.0, 0.0, 1.0], (0.2, 0.1))
    xy = rng.uniform(-50, 50, size=(10, 2))
    back, dist = plane.world_to_pixel(plane.pixel_to_world(xy))
    assert_allclose(back, xy, atol=1e-10)
    assert_allclose(dist, 0.0, atol=1e-10)


def test_edge_on_plane_is_detected_and_perpendicular_plane_is_not():
    lateral = lateral_geometry()
    ap = lateral_geometry(world_to_carm=rotation_from_axes([-1, 0, 0], [0, 0, -1]))
    sagittal = ImagePlane([20.0, -55.0, -24.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], (0.15, 0.15))
    corners = np.array([[0, 0], [320, 0], [320, 400], [0, 400]], float)
    assert check_not_edge_on(lateral, sagittal, corners) > 80.0
    assert plane_obliquity_deg(ap, sagittal, corners) < 5.0
    with pytest.raises(IllPosedGeometryError, match="edge-on"):
        check_not_edge_on(ap, sagittal, corners)


def test_geometry_round_trips_through_dict():
    geom = lateral_geometry(principal_point_px=(250.0, 260.0))
    back = ConeBeamGeometry.from_dict(geom.to_dict())
    assert_allclose(back.projection_matrix(), geom.projection_matrix())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sid_mm": -1.0}, "sid_mm must be finite"),
        ({"sod_mm": 1200.0}, "must be smaller than sid_mm"),
        ({"detector_spacing_mm": (0.0, 0.3)}, "detector_spacing_mm"),
        ({"world_to_carm": np.diag([1.0, 1.0, -1.0])}, "proper rotation"),
        ({"world_to_carm": np.ones((3, 3))}, "rotation matrix"),
    ],
)
def test_invalid_geometry_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lateral_geometry(**kwargs)


def test_parallel_axes_are_refused():
    with pytest.raises(ValueError, match="parallel"):
        rotation_from_axes([1, 0, 0], [2, 0, 0])
