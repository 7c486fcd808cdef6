"""De-identified DICOM outputs (issue #13, part 7): fused SC and Spatial Registration.

Without include_phi no source UID, Study ID, patient name/ID or real date may remain;
replacements are keyed (the user's pseudonym key), stable between runs and shared by the
SC and the REG of one case; the UID map is written only when asked.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import shutil
import subprocess
import tracemalloc
import uuid
import warnings
from collections.abc import Sequence

import numpy as np
import pydicom
import pytest

from hybridfuse.dose.pseudonym import KEY_ENV, user_key
from hybridfuse.fusion import read_image
from hybridfuse.fusion.deid import MAX_SHIFT_DAYS, Deidentifier, read_uid_map
from hybridfuse.fusion.dicom_out import write_fused_sc
from hybridfuse.fusion.registration_dicom import read_registration_dicom, write_registration_dicom
from hybridfuse.registration import Transform, fit_model
from hybridfuse.testdata import sample_case
from hybridfuse.testdata.phantom import load_truth

DICOM_ROOT = "1.2.840.10008."


@pytest.fixture(autouse=True)
def _own_key(tmp_path, monkeypatch):
    """Every test uses its own pseudonym key file, never the user's."""
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "keys" / "pseudonym.key"))


@pytest.fixture(scope="module")
def case():
    """Fixed and moving images of the sample case, their headers and an affine transform."""
    folder = sample_case()
    pair = next(p for p in load_truth(folder)["pairs"] if not p["edge_on"])
    fixed = read_image(folder / pair["fluoro_file"])
    moving = read_image(folder / "us_clip.dcm")
    headers = [pydicom.dcmread(i.source_path, stop_before_pixels=True) for i in (fixed, moving)]
    lms = [lm for lm in pair["landmarks"] if lm["in_us_region"] and lm["in_fluoro_field"]]
    mov = np.array([lm["moving_xy"] for lm in lms])
    fix = np.array([lm["fixed_xy"] for lm in lms])
    transform = Transform(fit_model("affine", mov, fix), "affine")
    return fixed, moving, headers, transform


def _write(case, out, *, include_phi=False, uid_map=None, n_frames=3):
    fixed, moving, headers, transform = case
    out.mkdir(parents=True, exist_ok=True)
    frames = [np.full((24, 32, 3), 40 * k, np.uint8) for k in range(n_frames)]
    sc = write_fused_sc(
        out / "fused_sc.dcm",
        frames,
        fixed_ds=headers[0],
        moving_ds=headers[1],
        frame_time_ms=250.0,
        include_phi=include_phi,
        burned_in=False,
        description="test fusion",
        uid_map=uid_map,
    )
    reg = write_registration_dicom(
        out / "registration.dcm",
        transform,
        fixed,
        moving,
        include_phi=include_phi,
        uid_map=uid_map,
    )
    return pydicom.dcmread(sc), pydicom.dcmread(reg)


def _elements(ds):
    """Every data element, inside sequences and the file meta too."""
    yield from ds.file_meta
    yield from ds.iterall()


def _uids(ds, *, meta=True) -> set[str]:
    out = set()
    for elem in _elements(ds) if meta else ds.iterall():
        if elem.VR == "UI" and elem.value:
            values = [elem.value] if elem.VM == 1 else elem.value
            out |= {str(v) for v in values}
    return out


def _source_uids(case) -> set[str]:
    _, _, headers, _ = case
    # The file meta names the writing software (Implementation Class UID), not the patient.
    return {u for h in headers for u in _uids(h, meta=False) if not u.startswith(DICOM_ROOT)}


def _source_refs(ds) -> set[str]:
    return {str(e.value) for e in ds.iterall() if e.keyword == "ReferencedSOPInstanceUID"}


# --- nothing of the source remains ---------------------------------------------------------


def test_no_source_uid_anywhere_in_the_outputs(case, tmp_path):
    sc, reg = _write(case, tmp_path)
    secrets = _source_uids(case)
    assert len(secrets) >= 6  # study, 2 series, 2 SOP instances, a frame of reference
    for ds, name in ((sc, "fused_sc.dcm"), (reg, "registration.dcm")):
        assert not _uids(ds) & secrets, name
        raw = (tmp_path / name).read_bytes()
        assert not [u for u in secrets if u.encode() in raw], name
        own = {u for u in _uids(ds, meta=False) if not u.startswith(DICOM_ROOT)}
        assert all(re.fullmatch(r"2\.25\.[1-9]\d{0,38}", u) for u in own), own
        for u in own:  # the 2.25 root takes a UUID: RFC 9562 version 8, RFC variant
            value = uuid.UUID(int=int(u[5:]))
            assert value.version == 8 and value.variant == uuid.RFC_4122


def test_patient_and_study_identifiers_replaced(case, tmp_path):
    _, _, headers, _ = case
    src = headers[0]
    sc, reg = _write(case, tmp_path)
    label = Deidentifier(src, user_key()).patient_label
    for ds in (sc, reg):
        assert ds.StudyID == "" and ds.AccessionNumber == ""
        assert ds.PatientID == label and str(ds.PatientName) == f"ANONYMIZED^{label}"
        assert ds.PatientBirthDate == "" and ds.PatientSex == ""
    for name in ("fused_sc.dcm", "registration.dcm"):
        raw = (tmp_path / name).read_bytes()
        for secret in (str(src.PatientName), src.PatientID, src.AccessionNumber):
            assert secret.encode() not in raw, (name, secret)


def test_deidentification_is_declared_per_ps315(case, tmp_path):
    for ds in _write(case, tmp_path):
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethod
        codes = {
            (c.CodeValue, c.CodingSchemeDesignator) for c in ds.DeidentificationMethodCodeSequence
        }
        assert codes == {("113100", "DCM"), ("113107", "DCM")}
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_dates_shifted_by_one_offset_in_sc_and_reg(case, tmp_path):
    _, _, headers, _ = case
    src = headers[0]
    sc, reg = _write(case, tmp_path)
    real = dt.datetime.strptime(src.StudyDate, "%Y%m%d").date()
    shifts = {(real - dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date()).days for ds in (sc, reg)}
    assert len(shifts) == 1
    shift = shifts.pop()
    assert 1 <= shift <= MAX_SHIFT_DAYS
    for ds in (sc, reg):
        assert ds.StudyTime == src.StudyTime  # times of day are kept
        made = dt.datetime.strptime(ds.ContentDate, "%Y%m%d").date()
        # The creation date moves too, else it would give the offset away.
        assert (dt.date.today() - made).days in (shift, shift + 1)
        assert ds.InstanceCreationDate == ds.ContentDate
    for ds in (sc, reg):  # no date element carries the source's study date
        made = ("ContentDate", "InstanceCreationDate")  # today, shifted: checked above
        dates = [e for e in ds.iterall() if e.VR in ("DA", "DT") and e.value]
        dates = [e for e in dates if e.keyword not in made]
        assert not [e.name for e in dates if str(e.value).startswith(src.StudyDate)]
    if all(ds.ContentDate != src.StudyDate for ds in (sc, reg)):
        # Nowhere else either; skipped only when today's shifted date happens to be it.
        for name in ("fused_sc.dcm", "registration.dcm"):
            assert src.StudyDate.encode() not in (tmp_path / name).read_bytes()


def test_date_shift_keeps_time_and_drops_unreadable_dates():
    d = Deidentifier(None, b"k" * 32)
    n = d.shift_days
    day = (dt.date(2026, 1, 15) - dt.timedelta(days=n)).strftime("%Y%m%d")
    assert d.shift_date("20260115") == day
    assert d.shift_datetime("20260115093000.5+0100") == day + "093000.5+0100"
    assert d.shift_date("2026-01-15") == "" and d.shift_datetime("2026") == ""


# --- keyed, consistent, stable ---------------------------------------------------------------


def test_sc_and_reg_refer_to_the_same_replaced_sources(case, tmp_path):
    sc, reg = _write(case, tmp_path)
    assert sc.StudyInstanceUID == reg.StudyInstanceUID
    assert _source_refs(sc) == _source_refs(reg)
    assert len(_source_refs(sc)) == 2
    _, moving_for, fixed_for = read_registration_dicom(tmp_path / "registration.dcm")
    assert reg.FrameOfReferenceUID == fixed_for != moving_for


def test_two_runs_give_the_same_uids_and_another_key_others(case, tmp_path, monkeypatch):
    first = _write(case, tmp_path / "a")
    second = _write(case, tmp_path / "b")
    for ds1, ds2 in zip(first, second, strict=True):
        assert _uids(ds1) == _uids(ds2)
        assert ds1.StudyDate == ds2.StudyDate and ds1.PatientID == ds2.PatientID
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "other" / "pseudonym.key"))
    third = _write(case, tmp_path / "c")
    for ds1, ds3 in zip(first, third, strict=True):
        mine = {u for u in _uids(ds1, meta=False) if not u.startswith(DICOM_ROOT)}
        assert not mine & _uids(ds3)
        assert ds1.PatientID != ds3.PatientID


def test_another_fusion_of_the_same_sources_is_another_instance(case, tmp_path):
    sc1, _ = _write(case, tmp_path / "a", n_frames=3)
    sc2, _ = _write(case, tmp_path / "b", n_frames=2)
    assert sc1.SOPInstanceUID != sc2.SOPInstanceUID
    assert sc1.SeriesInstanceUID == sc2.SeriesInstanceUID
    assert sc1.StudyInstanceUID == sc2.StudyInstanceUID


def test_uid_map_written_only_when_asked(case, tmp_path):
    _write(case, tmp_path / "plain")
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == [
        "fused_sc.dcm",
        "registration.dcm",
    ]
    out = tmp_path / "mapped"
    sc, reg = _write(case, out, uid_map=out / "uid_map.csv")
    rows = read_uid_map(out / "uid_map.csv")
    assert set(rows) == _source_uids(case)  # the SC's and the REG's sources in one map
    _, _, headers, _ = case
    assert rows[str(headers[0].StudyInstanceUID)][0] == sc.StudyInstanceUID
    assert rows[str(headers[0].FrameOfReferenceUID)][0] == reg.FrameOfReferenceUID
    assert rows[str(headers[1].SOPInstanceUID)][0] in _source_refs(sc)


def test_include_phi_keeps_the_real_references(case, tmp_path):
    _, _, headers, _ = case
    fx, mv = headers
    sc, reg = _write(case, tmp_path, include_phi=True, uid_map=tmp_path / "uid_map.csv")
    assert not (tmp_path / "uid_map.csv").exists()
    for ds in (sc, reg):
        assert ds.StudyInstanceUID == fx.StudyInstanceUID
        assert _source_refs(ds) == {fx.SOPInstanceUID, mv.SOPInstanceUID}
        assert ds.PatientID == fx.PatientID and ds.PatientIdentityRemoved == "NO"
        assert ds.StudyID == fx.StudyID and ds.StudyDate == fx.StudyDate
    assert reg.FrameOfReferenceUID == fx.FrameOfReferenceUID


# --- written safely and valid ----------------------------------------------------------------


def test_predictable_temporary_name_is_not_followed(case, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    for name in ("fused_sc.dcm", "registration.dcm"):
        (out / f".{name}.partial").symlink_to(victim)
    _write(case, out)
    assert victim.read_text() == "keep"
    assert not [p for p in out.iterdir() if ".partial-" in p.name]


def test_failed_save_leaves_nothing(case, tmp_path, monkeypatch):
    def fail(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", fail)
    with pytest.raises(ValueError, match="no space left"):
        _write(case, tmp_path / "o", uid_map=tmp_path / "o" / "uid_map.csv")
    assert list((tmp_path / "o").iterdir()) == []


NO_DCIODVFY = pytest.mark.skipif(
    shutil.which("dciodvfy") is None,
    reason="dciodvfy (Debian dicom3tools) not installed; .ci/run installs it",
)


def _dciodvfy_errors(path) -> list[str]:
    """Every line of dciodvfy's report on ``path`` that contains "Error"."""
    res = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return [ln for ln in (res.stdout + res.stderr).splitlines() if "Error" in ln]


@NO_DCIODVFY
@pytest.mark.parametrize("include_phi", [False, True])
@pytest.mark.parametrize("n_frames", [1, 3])
def test_outputs_pass_dciodvfy(case, tmp_path, n_frames, include_phi):
    sc, _ = _write(case, tmp_path, n_frames=n_frames, include_phi=include_phi)
    assert ("FrameIncrementPointer" in sc) == (n_frames > 1)
    for name in ("fused_sc.dcm", "registration.dcm"):
        assert _dciodvfy_errors(tmp_path / name) == [], name


def _real_images():
    from tests.conftest import REALDATA

    return sorted((REALDATA / "images").glob("*.dcm"))


@NO_DCIODVFY
@pytest.mark.skipif(not _real_images(), reason="../shared/realdata/images is absent")
@pytest.mark.parametrize("include_phi", [False, True])
def test_outputs_from_real_vendor_headers_pass_dciodvfy(case, tmp_path, include_phi):
    # Real headers carry values their VR refuses (the Siemens RF file: Patient's Sex "?"),
    # which a derived object must not copy: each file as the source of the patient and
    # study modules, with one frame and with several.
    from hybridfuse.fusion.pair import with_given_spacing

    moving = case[1]
    for path in _real_images():
        header = pydicom.dcmread(path, stop_before_pixels=True)
        for n_frames in (1, 2):
            out = tmp_path / f"{path.stem}-{n_frames}-{include_phi}.dcm"
            frames = [np.full((16, 24, 3), 60 * k, np.uint8) for k in range(n_frames)]
            write_fused_sc(
                out, frames, fixed_ds=header, moving_ds=case[2][1], frame_time_ms=100.0,
                include_phi=include_phi, burned_in=False, description="real header",
            )  # fmt: skip
            assert _dciodvfy_errors(out) == [], out.name
        image = with_given_spacing(read_image(path, decode=False), (0.3, 0.3), fixed=True)
        reg = tmp_path / f"{path.stem}-{include_phi}-reg.dcm"
        write_registration_dicom(reg, case[3], image, moving, include_phi=include_phi)
        assert _dciodvfy_errors(reg) == [], reg.name
        if "KarstenHilbertRF" in path.name:  # no SID/SOD: the millimetres are the detector's
            description = pydicom.dcmread(reg).ContentDescription
            assert description == "US plane mm to fluoro detector-plane mm (no SID/SOD)"


def test_study_date_and_time_are_the_sources_with_include_phi(case, tmp_path):
    _, _, headers, _ = case
    for ds in _write(case, tmp_path, include_phi=True):
        assert (ds.StudyDate, ds.StudyTime) == (headers[0].StudyDate, headers[0].StudyTime)
        assert ds.Laterality == ""  # Type 2C: empty (unknown), see docs/cli.md


def test_a_source_value_its_vr_refuses_is_left_empty(case, tmp_path):
    _, _, headers, _ = case
    src = pydicom.Dataset()
    src.update(headers[0])
    with warnings.catch_warnings():  # pydicom warns on setting them; a real file has them
        warnings.simplefilter("ignore")
        src.PatientSex, src.StudyTime, src.PatientBirthDate = "?", "9h", "1970"
    sc = write_fused_sc(
        tmp_path / "sc.dcm", [np.zeros((8, 8, 3), np.uint8)], fixed_ds=src, moving_ds=None,
        frame_time_ms=100.0, include_phi=True, burned_in=False, description="bad values",
    )  # fmt: skip
    ds = pydicom.dcmread(sc)
    assert (ds.PatientSex, ds.StudyTime, ds.PatientBirthDate) == ("", "", "")
    assert ds.StudyDate == src.StudyDate


class _LazyFrames(Sequence):
    """Frames made on access, like the fusion's spool on disk."""

    def __init__(self, n, shape):
        self.n, self.shape = n, shape

    def __len__(self):
        return self.n

    def __getitem__(self, k):
        if not 0 <= k < self.n:
            raise IndexError(k)
        return np.full(self.shape, 7 * k % 256, np.uint8)


def test_pixel_data_streamed_exactly_without_a_copy_of_the_run(tmp_path):
    rng = np.random.default_rng(3)
    odd = list(rng.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8))  # 315 bytes: padded
    write_fused_sc(
        tmp_path / "odd.dcm",
        odd,
        fixed_ds=None,
        moving_ds=None,
        frame_time_ms=100.0,
        include_phi=False,
        burned_in=False,
        description="odd",
    )
    ds = pydicom.dcmread(tmp_path / "odd.dcm")
    assert len(ds.PixelData) == 316
    assert np.array_equal(ds.pixel_array, np.stack(odd))
    big = _LazyFrames(30, (256, 256, 3))  # 5.9 MB of frames, made one at a time
    tracemalloc.start()
    try:
        write_fused_sc(
            tmp_path / "big.dcm",
            big,
            fixed_ds=None,
            moving_ds=None,
            frame_time_ms=100.0,
            include_phi=False,
            burned_in=False,
            description="big",
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # one frame at a time: never stacked or joined
    ds = pydicom.dcmread(tmp_path / "big.dcm")
    assert np.array_equal(ds.pixel_array[29], big[29])


def test_registration_of_images_without_dicom_headers(case, tmp_path):
    fixed, moving, _, transform = case
    bare = [dataclasses.replace(img, uids={}) for img in (fixed, moving)]
    paths = [write_registration_dicom(tmp_path / f"r{k}.dcm", transform, *bare) for k in range(2)]
    (m1, mov1, fix1), (m2, mov2, fix2) = (read_registration_dicom(p) for p in paths)
    assert mov1 != fix1 and (mov1, fix1) == (mov2, fix2)  # new, distinct and stable
    assert np.array_equal(m1, m2)


def test_reading_something_else_as_a_registration_names_the_file(case, tmp_path):
    from hybridfuse.fusion import InputError

    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    _write(case, tmp_path)
    for path in (junk, tmp_path / "fused_sc.dcm", tmp_path / "missing.dcm"):
        with pytest.raises(InputError, match=re.escape(str(path))):
            read_registration_dicom(path)
