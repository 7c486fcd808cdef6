"""Valid files shaped as other vendors write them (sweep of session 19, well-formed)."""

from __future__ import annotations

import numpy as np
from numpy.testing import assert_allclose
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from hybridfuse.fusion import SpacingPlane, read_image
from tests.fusion.test_io import US_SOP, make_dicom

ENHANCED_XA_SOP = "1.2.840.10008.5.1.4.1.1.12.1.1"


def test_xray_pixel_spacing_calibrated_by_geometry_gives_the_isocentre_spacing(tmp_path):
    # PixelSpacing with calibration GEOMETRY is the spacing at the isocentre (PS3.3
    # C.7.6.3.1.7); without ImagerPixelSpacing it was shown but no mm reached transform.json.
    path = make_dicom(
        tmp_path / "xa.dcm",
        rows=40,
        cols=40,
        PixelSpacing=[0.28, 0.28],
        PixelSpacingCalibrationType="GEOMETRY",
    )
    img = read_image(path)
    assert img.spacing_plane is SpacingPlane.ISOCENTER
    assert_allclose(img.xray.isocenter_spacing_mm, (0.28, 0.28))


def test_xray_pixel_spacing_uncalibrated_is_no_isocentre_spacing(tmp_path):
    path = make_dicom(tmp_path / "xa.dcm", rows=40, cols=40, PixelSpacing=[0.28, 0.28])
    assert read_image(path).xray.isocenter_spacing_mm is None


def test_native_ybr_full_422_ultrasound_decodes(tmp_path):
    # Uncompressed YBR_FULL_422 holds 2 bytes per pixel; pydicom 3.0's frame iterator reads
    # 3 and the file was refused as "data corrupt" at its last frames.
    rows, cols, frames = 8, 10, 3
    grey = (np.arange(frames * rows * cols) % 200 + 20).astype(np.uint8)
    grey = grey.reshape(frames, rows, cols)
    packed = np.empty((frames, rows, cols // 2, 4), np.uint8)
    packed[..., 0], packed[..., 1] = grey[..., ::2], grey[..., 1::2]
    packed[..., 2] = packed[..., 3] = 128  # Cb, Cr of grey
    path = make_dicom(
        tmp_path / "us.dcm",
        sop=US_SOP,
        modality="US",
        rows=rows,
        cols=cols,
        frames=frames,
        pixels=False,
        SamplesPerPixel=3,
        PhotometricInterpretation="YBR_FULL_422",
        PlanarConfiguration=0,
        PixelData=packed.tobytes(),
    )
    img = read_image(path)
    assert img.array.shape == (frames, rows, cols, 3)
    assert np.abs(img.array[..., 0].astype(int) - grey).max() <= 1


def test_enhanced_xa_geometry_in_functional_groups_is_read(tmp_path):
    # Enhanced XA keeps ImagerPixelSpacing, SID, source-isocentre distance, angles and
    # shutters in functional groups (PS3.3 A.53); they were read as absent: no mm at all.
    shared = Dataset()
    props = Dataset()
    props.ImagerPixelSpacing = [0.37, 0.37]
    shared.FramePixelDataPropertiesSequence = Sequence([props])
    geometry = Dataset()
    geometry.DistanceSourceToDetector = 1000.0
    geometry.DistanceSourceToIsocenter = 750.0
    shared.XRayGeometrySequence = Sequence([geometry])
    position = Dataset()
    position.PositionerPrimaryAngle = 90.0
    position.PositionerSecondaryAngle = 0.0
    shared.PositionerPositionSequence = Sequence([position])
    shutter = Dataset()
    shutter.ShutterShape = "CIRCULAR"
    shutter.CenterOfCircularShutter = [21, 21]
    shutter.RadiusOfCircularShutter = 15
    shared.FrameDisplayShutterSequence = Sequence([shutter])
    path = make_dicom(
        tmp_path / "exa.dcm",
        sop=ENHANCED_XA_SOP,
        rows=40,
        cols=40,
        frames=2,
        SharedFunctionalGroupsSequence=Sequence([shared]),
        PerFrameFunctionalGroupsSequence=Sequence([Dataset(), Dataset()]),
    )
    img = read_image(path)
    assert img.pixel_spacing_mm == (0.37, 0.37)
    assert img.xray.sid_mm == 1000.0 and img.xray.sod_mm == 750.0
    assert img.xray.primary_angle_deg == 90.0
    assert_allclose(img.xray.isocenter_spacing_mm, (0.37 * 0.75, 0.37 * 0.75))
    assert img.mask is not None and not img.mask[0, 0] and img.mask[20, 20]
