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


def _frame_group(angle: float) -> Dataset:
    group, position, props = Dataset(), Dataset(), Dataset()
    position.PositionerPrimaryAngle = angle
    group.PositionerPositionSequence = Sequence([position])
    props.ImagerPixelSpacing = [0.3, 0.3]
    group.FramePixelDataPropertiesSequence = Sequence([props])
    return group


def test_enhanced_xa_per_frame_groups_and_a_polygonal_shutter(tmp_path):
    # Per-frame values every frame agrees on are read; one that varies is left out, said;
    # a polygonal shutter in the shared group masks the field (review of session 19).
    shared, shutter = Dataset(), Dataset()
    shutter.ShutterShape = "POLYGONAL"
    shutter.VerticesOfThePolygonalShutter = [11, 11, 11, 30, 20, 30, 20, 11]
    shared.FrameDisplayShutterSequence = Sequence([shutter])
    path = make_dicom(
        tmp_path / "exa_frames.dcm",
        sop=ENHANCED_XA_SOP,
        rows=40,
        cols=40,
        frames=2,
        SharedFunctionalGroupsSequence=Sequence([shared]),
        PerFrameFunctionalGroupsSequence=Sequence([_frame_group(10.0), _frame_group(12.0)]),
    )
    img = read_image(path)
    assert img.pixel_spacing_mm == (0.3, 0.3)
    assert img.xray.primary_angle_deg is None
    assert any("PositionerPrimaryAngle varies" in n for n in img.notes)
    expected = np.zeros((40, 40), bool)
    expected[10:20, 10:30] = True
    assert img.mask is not None and (img.mask == expected).all()


def _sr_file(path, sop, root_code, template, study):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study
    ds.Modality = "KO" if sop.endswith(".59") else "SR"
    ds.ValueType = "CONTAINER"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = root_code, "DCM", "x"
    ds.ConceptNameCodeSequence = Sequence([code])
    item = Dataset()
    item.MappingResource, item.TemplateIdentifier = "DCMR", template
    ds.ContentTemplateSequence = Sequence([item])
    ds.ContentSequence = Sequence([])
    ds.save_as(path, enforce_file_format=True)


def test_case_folder_takes_the_dose_report_not_a_key_object_or_measurement_sr(tmp_path):
    # An archive exports a study with its Key Object Selection ("key images") and the
    # scanner's measurement SR; sorting first, either was taken as the RDSR and the run
    # failed ("... is not a structured report that can hold an X-ray dose report").
    import shutil

    from hybridfuse.fusion.pipeline import case_from_folder
    from hybridfuse.testdata import sample_case

    case = tmp_path / "case"
    shutil.copytree(sample_case(), case)
    _sr_file(case / "KO000001.dcm", "1.2.840.10008.5.1.4.1.1.88.59", "113000", "2010", "1.2")
    _sr_file(case / "SR000001.dcm", "1.2.840.10008.5.1.4.1.1.88.33", "125100", "5100", "1.2")
    assert case_from_folder(case).rdsr == str(case / "rdsr.dcm")
    # Without the dose report the measurement SR is still not taken for one (review of
    # session 19: it was, and the run failed instead of reading the images' dose tags).
    (case / "rdsr.dcm").unlink()
    assert case_from_folder(case).rdsr is None


def test_case_folder_with_two_dose_reports_is_refused_not_one_dropped(tmp_path):
    # Two dose reports (two sessions of one study): reading the first by name dropped the
    # other's dose without a word.
    import shutil

    import pydicom
    import pytest
    from pydicom.uid import generate_uid

    from hybridfuse.fusion import InputError
    from hybridfuse.fusion.pipeline import case_from_folder
    from hybridfuse.testdata import sample_case

    case = tmp_path / "case"
    shutil.copytree(sample_case(), case)
    second = pydicom.dcmread(case / "rdsr.dcm")
    second.SOPInstanceUID = second.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    second.save_as(case / "RDSR2.dcm")
    with pytest.raises(InputError, match="2 different dose reports") as caught:
        case_from_folder(case)
    assert "RDSR2" not in str(caught.value)  # counted, not named (a batch row keeps it)
    # the same report twice (re-sent, one SOP Instance UID) is one report
    shutil.copy(case / "rdsr.dcm", case / "RDSR2.dcm")
    assert case_from_folder(case).rdsr in (str(case / "rdsr.dcm"), str(case / "RDSR2.dcm"))


def _write_file_set(folder, files):
    """A DICOMDIR file set of ``files`` as pydicom writes one (PT*/ST*/SE*/IM* names)."""
    from pydicom.fileset import FileSet

    fs = FileSet()
    try:
        for f in files:
            fs.add(str(f))
        fs.write(str(folder))
    finally:
        stage = getattr(fs, "_stage", {}).get("t")
        if stage is not None:  # its temporary folder, else cleaned up with a warning
            stage.cleanup()


def test_case_folder_as_a_dicomdir_file_set_finds_its_files(tmp_path):
    # Media exports (CD/USB) are DICOMDIR file sets: the files lie in PT*/ST*/SE*/ folders,
    # named without a suffix. The run said "no fluoroscopy file".
    from hybridfuse.fusion.pipeline import case_from_folder
    from hybridfuse.testdata import sample_case

    _write_file_set(
        tmp_path / "case",
        [sample_case() / n for n in ("fluoro_run03_confirm_ap.dcm", "us_clip.dcm", "rdsr.dcm")],
    )
    spec = case_from_folder(tmp_path / "case")
    assert len(spec.fluoro) == 1 and len(spec.ultrasound) == 1 and spec.rdsr is not None
    assert all(str(tmp_path / "case") in p for p in spec.files())


def test_dicomdir_is_named_as_an_index_not_an_image_without_pixels(tmp_path):
    import pytest

    from hybridfuse.fusion import NotAnImageError
    from hybridfuse.testdata import sample_case

    _write_file_set(tmp_path / "set", [sample_case() / "rdsr.dcm"])
    with pytest.raises(NotAnImageError, match="index of a file set"):
        read_image(tmp_path / "set" / "DICOMDIR")


def _without_preamble(src, dest):
    """The file as a DICOM stream: no 128-byte preamble and no 'DICM' (PS3.10 7.1)."""
    data = src.read_bytes()
    assert data[128:132] == b"DICM"
    dest.write_bytes(data[132:])
    return dest


def test_dicom_stream_without_preamble_is_read(tmp_path):
    # Written by some archives and toolkits; it was "not a DICOM file (no 'DICM' preamble
    # and no recognisable DICOM elements)" although its first element is (0002,0000).
    from hybridfuse.dose.image_tags import read_header
    from hybridfuse.testdata import sample_case

    path = make_dicom(tmp_path / "xa.dcm", rows=40, cols=40, ImagerPixelSpacing=[0.2, 0.2])
    stream = _without_preamble(path, tmp_path / "stream.dcm")
    assert_allclose(read_image(stream).array, read_image(path).array)
    assert read_image(stream).pixel_spacing_mm == (0.2, 0.2)
    rdsr = _without_preamble(sample_case() / "rdsr.dcm", tmp_path / "rdsr")
    assert str(read_header(rdsr).SOPClassUID) == "1.2.840.10008.5.1.4.1.1.88.67"


def test_a_text_file_is_still_not_dicom(tmp_path):
    import pytest

    from hybridfuse.fusion import NotAnImageError

    (tmp_path / "notes.dcm").write_text("patient notes\n" * 20)
    with pytest.raises(NotAnImageError, match="not a DICOM file"):
        read_image(tmp_path / "notes.dcm")


def test_run_takes_the_ultrasound_clip_acquired_with_the_fluoroscopy(tmp_path):
    # A scanner stores each clip (or each frame) as its own file; only the first file by
    # name was used, so a case whose first clip was taken before the fluoroscopy failed
    # with "no ultrasound frame within 0.5 s" while another clip overlapped it exactly.
    import shutil

    import pydicom
    from pydicom.uid import generate_uid

    from hybridfuse._safeio import sha256_file
    from hybridfuse.fusion.pipeline import RunConfig, _read_pair, case_from_folder, input_records
    from hybridfuse.testdata import sample_case

    case = tmp_path / "case"
    case.mkdir()
    for name in ("fluoro_run03_confirm_ap.dcm", "rdsr.dcm"):
        shutil.copy(sample_case() / name, case / name)
    shutil.copy(sample_case() / "us_clip.dcm", case / "us_2.dcm")
    early = pydicom.dcmread(sample_case() / "us_clip.dcm")
    early.SOPInstanceUID = early.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    early.AcquisitionDateTime = "20260115083232"
    early.AcquisitionTime = early.ContentTime = "083232"
    early.save_as(case / "us_1.dcm")
    spec = case_from_folder(case)
    assert len(spec.ultrasound) == 2
    records = input_records(spec, {p: sha256_file(p) for p in spec.files()}, include_phi=False)
    _, pairing, _ = _read_pair(spec, RunConfig(), records)
    assert [p.ultrasound for p in pairing] == [str(case / "us_2.dcm")]


def test_case_folder_whose_c_arm_wrote_dx_images_finds_them(tmp_path):
    # A mobile C-arm may store its saved images as Digital X-Ray (DX); register/fuse read
    # them, but the case folder said "no fluoroscopy file".
    import shutil

    import pydicom

    from hybridfuse.fusion.pipeline import case_from_folder
    from hybridfuse.testdata import sample_case

    case = tmp_path / "case"
    case.mkdir()
    shutil.copy(sample_case() / "us_clip.dcm", case / "us_clip.dcm")
    ds = pydicom.dcmread(sample_case() / "fluoro_run03_confirm_ap.dcm")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.Modality = "DX"
    ds.PixelData = ds.pixel_array[0].tobytes()  # DX is single-frame
    for keyword in ("NumberOfFrames", "FrameIncrementPointer", "FrameTimeVector"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.save_as(case / "dx.dcm")
    assert case_from_folder(case).fluoro == (str(case / "dx.dcm"),)


def test_polygonal_shutter_masks_the_field(tmp_path):
    # ShutterShape POLYGONAL (vertices row\\column, 1-based, PS3.3 C.7.6.11) was ignored: the
    # collimator blades entered registration and the fused window.
    path = make_dicom(
        tmp_path / "poly.dcm",
        rows=40,
        cols=40,
        ShutterShape="POLYGONAL",
        VerticesOfThePolygonalShutter=[11, 11, 11, 30, 20, 30, 20, 11],  # rows 11-20
    )
    img = read_image(path)
    expected = np.zeros((40, 40), bool)
    expected[10:20, 10:30] = True  # not square: a row/column swap shows
    assert img.mask is not None and (img.mask == expected).all()
