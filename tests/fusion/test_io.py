"""Reading DICOM and plain images: real vendor files, our own synthetic files, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from numpy.testing import assert_allclose
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from hybridfuse.fusion import (
    CorruptFileError,
    DecoderMissingError,
    InputError,
    MissingCalibrationError,
    Modality,
    NotAnImageError,
    SpacingPlane,
    UnsupportedSOPClassError,
    read_image,
)
from tests.conftest import REALDATA, realdata_rows

US_SOP = "1.2.840.10008.5.1.4.1.1.6.1"
XA_SOP = "1.2.840.10008.5.1.4.1.1.12.1"
CT_SOP = "1.2.840.10008.5.1.4.1.1.2"


def make_dicom(
    path,
    sop=XA_SOP,
    modality="XA",
    rows=8,
    cols=10,
    frames=1,
    pixels=True,
    syntax=ExplicitVRLittleEndian,
    **attrs,
):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for key, value in attrs.items():
        setattr(ds, key, value)
    if pixels:
        ds.PixelData = (np.arange(rows * cols * frames) % 251).astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


# --- real vendor files -------------------------------------------------------------------


@pytest.mark.parametrize("row", realdata_rows("images"))
def test_reads_every_real_image(row):
    img = read_image(REALDATA / "images" / row["filename"])
    assert img.shape == (int(row["rows"]), int(row["columns"]))
    frames = int(row["number_of_frames"]) if row["number_of_frames"] else 1
    assert img.n_frames == frames
    assert img.modality is Modality(row["modality"])
    if row["us_regions"]:
        # The first calibrated region's PhysicalDeltaX (cm) → mm.
        dx_cm = float(row["us_regions"].split("dx=")[1].split()[0])
        assert img.pixel_spacing_mm[1] == pytest.approx(dx_cm * 10)
        assert img.spacing_plane is SpacingPlane.ULTRASOUND
        assert img.mask is not None and 0.2 < img.mask.mean() < 0.9


@pytest.mark.skipif(not (REALDATA / "images").is_dir(), reason="../shared/realdata absent")
def test_jpeg_ybr_multiframe_cine_decodes_to_rgb_with_frame_times():
    img = read_image(REALDATA / "images" / "orthanc-tests__Issue16.dcm")
    assert img.array.shape == (34, 430, 480, 3)
    assert_allclose(np.diff(img.frame_times_s), 0.030)  # FrameTime 30 ms
    # A decoded B-mode is not blank and the region holds most of the signal.
    gray = img.gray(10)
    assert gray[img.mask].mean() > gray[~img.mask].mean()


@pytest.mark.skipif(not (REALDATA / "images").is_dir(), reason="../shared/realdata absent")
def test_implausible_pixel_spacing_is_reported_and_ignored():
    img = read_image(REALDATA / "images" / "openrem__DX-Im-SiemensMultix.dcm")
    assert img.pixel_spacing_mm == pytest.approx((0.144, 0.144))
    assert any("implausible" in n for n in img.notes)


@pytest.mark.skipif(not (REALDATA / "images").is_dir(), reason="../shared/realdata absent")
def test_xray_without_spacing_says_so_and_require_spacing_refuses():
    path = REALDATA / "images" / "orthanc-tests__KarstenHilbertRF.dcm"
    img = read_image(path)
    assert img.pixel_spacing_mm is None
    with pytest.raises(MissingCalibrationError, match="--fixed-spacing-mm"):
        read_image(path, require_spacing=True)


# --- the synthetic files -------------------------------------------------------------------


def test_synthetic_fluoro_geometry_and_collimator(synthetic_case):
    case, truth = synthetic_case
    run = truth["fluoro_runs"][1]
    img = read_image(case / run["file"])
    geom = run["geometry"]
    assert img.modality is Modality.XA
    assert img.inverted  # stored MONOCHROME1
    assert img.pixel_spacing_mm == pytest.approx(tuple(geom["detector_spacing_mm_row_col"]))
    assert img.xray.sid_mm == pytest.approx(geom["sid_mm"])
    assert img.xray.sod_mm == pytest.approx(geom["sod_mm"])
    assert img.xray.isocenter_spacing_mm[0] == pytest.approx(
        0.37 * geom["sod_mm"] / geom["sid_mm"], rel=1e-9
    )
    assert_allclose(img.frame_times_s, np.asarray(run["frame_times_s"]) - run["frame_times_s"][0])
    # The collimator mask is the written circle; outside it nothing was exposed (black).
    yy, xx = np.mgrid[0:512, 0:512]
    cx, cy = run["collimator"]["center_px_xy"]
    circle = (xx - cx) ** 2 + (yy - cy) ** 2 <= run["collimator"]["radius_px"] ** 2
    assert (img.mask != circle).mean() < 0.01
    assert img.frame(0)[~img.mask].max() == 0


def test_synthetic_us_calibration_and_times(synthetic_case):
    case, truth = synthetic_case
    img = read_image(case / "us_clip.dcm")
    lay = truth["ultrasound"]["layout"]
    assert img.pixel_spacing_mm == pytest.approx((lay["spacing_mm"], lay["spacing_mm"]))
    x0, y0, x1, y1 = lay["region_x0_y0_x1_y1"]
    assert img.us_region.x0 == x0 and img.us_region.y1 == y1
    assert (img.us_region.reference_x, img.us_region.reference_y) == pytest.approx(
        tuple(lay["reference_px_xy"]), abs=0.5
    )
    times = np.asarray(truth["ultrasound"]["frame_times_s"])
    assert_allclose(img.frame_times_s, times - times[0], atol=1e-6)


# --- bad input ---------------------------------------------------------------------------------


def test_not_dicom(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_bytes(b"this is not an image at all" * 20)
    with pytest.raises(NotAnImageError, match=r"notes\.dcm: not a DICOM file"):
        read_image(path)


def test_truncated_file(tmp_path, synthetic_case):
    case, _ = synthetic_case
    data = (case / "fluoro_run01_scout_lateral.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match=r"cut\.dcm: truncated"):
        read_image(path)


def test_no_pixel_data(tmp_path):
    path = make_dicom(tmp_path / "empty.dcm", pixels=False)
    with pytest.raises(NotAnImageError, match=r"empty\.dcm: no Pixel Data"):
        read_image(path)


def test_structured_report_is_not_an_image(synthetic_case):
    case, _ = synthetic_case
    with pytest.raises(NotAnImageError, match="structured report, not an image"):
        read_image(case / "rdsr.dcm")


def test_unsupported_sop_class(tmp_path):
    path = make_dicom(tmp_path / "ct.dcm", sop=CT_SOP, modality="CT")
    with pytest.raises(UnsupportedSOPClassError, match="CT Image Storage"):
        read_image(path)


def test_us_without_calibration_names_the_flag(tmp_path):
    path = make_dicom(tmp_path / "us.dcm", sop=US_SOP, modality="US")
    img = read_image(path)
    assert img.pixel_spacing_mm is None
    assert "no ultrasound region calibrated in cm" in img.spacing_source
    with pytest.raises(MissingCalibrationError, match=r"us\.dcm.*--moving-spacing-mm"):
        read_image(path, require_spacing=True)
    assert read_image(path, spacing_mm=(0.2, 0.2)).pixel_spacing_mm == (0.2, 0.2)


def test_us_region_not_calibrated_in_cm_gives_no_spacing(tmp_path):
    region = Dataset()
    region.RegionSpatialFormat = 1
    region.RegionDataType = 1
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 1, 1
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 8, 6
    region.PhysicalUnitsXDirection = 4  # seconds: a Doppler-like axis, not space
    region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX, region.PhysicalDeltaY = 0.01, 0.01
    path = make_dicom(
        tmp_path / "us.dcm",
        sop=US_SOP,
        modality="US",
        SequenceOfUltrasoundRegions=Sequence([region]),
    )
    assert read_image(path).pixel_spacing_mm is None


def test_missing_decoder_is_named(tmp_path):
    # HTJ2K needs pylibjpeg-openjpeg, which the project does not install (Pillow decodes
    # plain JPEG 2000, so garbage there is corrupt data, not a missing decoder).
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    if get_decoder("1.2.840.10008.1.2.4.201").is_available:
        pytest.skip("an HTJ2K decoder is installed here")
    path = make_dicom(tmp_path / "j2k.dcm", pixels=False, syntax="1.2.840.10008.1.2.4.201")
    import pydicom

    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DecoderMissingError, match=r"j2k\.dcm: cannot decode High-Throughput JPEG"):
        read_image(path)


def test_monochrome1_is_inverted(tmp_path):
    path = make_dicom(tmp_path / "m1.dcm", PhotometricInterpretation="MONOCHROME1")
    raw = (np.arange(80) % 251).astype(np.uint8).reshape(8, 10)
    img = read_image(path)
    assert img.inverted
    assert_allclose(img.frame(0), 255 - raw)


def test_rectangular_shutter_mask_uses_one_based_edges(tmp_path):
    path = make_dicom(
        tmp_path / "rect.dcm",
        ShutterShape="RECTANGULAR",
        ShutterLeftVerticalEdge=3,
        ShutterRightVerticalEdge=8,
        ShutterUpperHorizontalEdge=2,
        ShutterLowerHorizontalEdge=5,
    )
    mask = read_image(path).mask
    expected = np.zeros((8, 10), bool)
    expected[1:5, 2:8] = True  # 1-based inclusive edges → 0-based slices
    assert (mask == expected).all()


def test_frame_time_vector_gives_irregular_times(tmp_path):
    path = make_dicom(
        tmp_path / "ftv.dcm",
        frames=3,
        FrameTimeVector=["0", "40", "120"],
        FrameIncrementPointer=0x00181065,
    )
    assert_allclose(read_image(path).frame_times_s, [0.0, 0.04, 0.16])


def test_png_with_spacing_given_by_hand(tmp_path, rng):
    arr = rng.integers(0, 255, size=(12, 20), dtype=np.uint8)
    path = tmp_path / "frame.png"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    img = read_image(path, spacing_mm=(0.1, 0.2))
    assert img.pixel_spacing_mm == (0.1, 0.2)
    assert_allclose(img.frame(0), arr)
    assert read_image(path).pixel_spacing_mm is None


def test_mha_spacing_comes_from_its_header(tmp_path):
    itk = sitk.GetImageFromArray(np.zeros((6, 9), np.float32))
    itk.SetSpacing((0.3, 0.2))  # (x, y)
    path = tmp_path / "frame.mha"
    sitk.WriteImage(itk, str(path))
    assert read_image(path).pixel_spacing_mm == pytest.approx((0.2, 0.3))


def test_bad_spacing_argument(tmp_path, rng):
    path = tmp_path / "frame.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4), np.uint8)), str(path))
    with pytest.raises(InputError, match="spacing must be finite and > 0"):
        read_image(path, spacing_mm=(0.0, 1.0))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "nope.dcm")
