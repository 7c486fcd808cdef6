"""Siemens' private radiation summary (ARCADIS Varic, root ``C-10``, ``99SMS_RADSUM``).

No real file is available (none in ../shared/realdata). The reports here are SYNTHETIC,
built from the codes OpenREM's importer reads (``_import_varic``: root C-10 of scheme
99SMS_RADSUM, C-200 a count of exposures, C-202 fluoro time, C-204 DAP, which OpenREM
takes as Gy·cm²) and the ARCADIS VC10A conformance statement as OpenREM's issue #433
quotes it. Nothing else of the real layout is invented: the content is those items,
directly under the root, as OpenREM walks them.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from hybridfuse.cli.main import cli
from hybridfuse.dose import DoseInputError, read_rdsr
from hybridfuse.dose.rdsr import summarize_dose_report

ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _num(code: str, meaning: str, value: str, unit: str | None) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "NUM"
    item.ConceptNameCodeSequence = Sequence([_code(code, "99SMS_RADSUM", meaning)])
    measured = Dataset()
    measured.NumericValue = value
    if unit is not None:
        measured.MeasurementUnitsCodeSequence = Sequence([_code(unit, "UCUM", unit)])
    item.MeasuredValueSequence = Sequence([measured])
    return item


def radsum(path, items=None, root=("C-10", "99SMS_RADSUM")):
    """Write a RADSUM summary: fluoro time 125.5 s, DAP 3.21 Gy·cm², 14 exposures."""
    if items is None:
        items = [
            _num("C-200", "Number of Exposures", "14", "1"),
            _num("C-202", "Fluoro Time", "125.5", "s"),
            _num("C-204", "Dose Area Product", "3.21", "Gy.cm2"),
        ]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ENHANCED_SR
    ds.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_SR, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.Manufacturer, ds.ManufacturerModelName = "SR", "Siemens", "ARCADIS Varic"
    ds.PatientName, ds.PatientID = "Doe^Jane", "RADSUM-1"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code(*root, "Radiation Summary Report")])
    ds.ContentSequence = Sequence(items)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_radsum_is_read_into_the_summary_record_and_flagged(tmp_path):
    rec = read_rdsr(radsum(tmp_path / "radsum.dcm"))
    assert rec.total("fluoro_time_s") == pytest.approx(125.5)
    assert rec.total("dap_total_gy_cm2") == pytest.approx(3.21)
    assert rec.total("dose_rp_total_mgy") is None  # not in the summary: unknown, not 0
    assert rec.events == [] and list(rec.planes) == ["single"]
    assert rec.has_fluoroscopy
    assert "99SMS_RADSUM" in rec.non_standard
    assert rec.not_read == ["C-200 (99SMS_RADSUM) 'Number of Exposures' NUM"]
    (flag,) = [f for f in rec.flags if f.startswith("non-standard SR")]
    assert "C-202" in flag and "C-204" in flag and "C-200" in flag


def test_the_unit_code_is_converted_not_assumed(tmp_path):
    items = [
        _num("C-202", "Fluoro Time", "2.5", "min"),
        _num("C-204", "Dose Area Product", "321", "cGy.cm2"),
    ]
    rec = read_rdsr(radsum(tmp_path / "radsum.dcm", items))
    assert rec.total("fluoro_time_s") == pytest.approx(150.0)
    assert rec.total("dap_total_gy_cm2") == pytest.approx(3.21)
    assert rec.not_read == []


def test_a_value_without_unit_is_unknown_and_said(tmp_path):
    items = [
        _num("C-202", "Fluoro Time", "125.5", "s"),
        _num("C-204", "Dose Area Product", "3.21", None),
    ]
    rec = read_rdsr(radsum(tmp_path / "radsum.dcm", items))
    assert rec.total("dap_total_gy_cm2") is None
    assert any("C-204" in f and "no unit code" in f for f in rec.flags)


def test_a_summary_with_neither_total_is_refused(tmp_path):
    path = radsum(tmp_path / "radsum.dcm", [_num("C-200", "Number of Exposures", "3", "1")])
    with pytest.raises(DoseInputError, match="without a readable fluoro time"):
        read_rdsr(path)


def test_c10_of_another_scheme_is_not_taken_for_radsum(tmp_path):
    path = radsum(tmp_path / "other.dcm", root=("C-10", "99OTHER"))
    with pytest.raises(DoseInputError, match="root concept is C-10"):
        read_rdsr(path)


def test_dose_report_and_info_on_a_radsum(tmp_path):
    path = radsum(tmp_path / "radsum.dcm")
    out = tmp_path / "report"
    r = CliRunner().invoke(cli, ["dose", "report", "--rdsr", str(path), "--out", str(out)])
    assert r.exit_code == 0, r.output
    dose = json.loads((out / "dose.json").read_text())
    assert dose["delivered"]["dap_total_gy_cm2"] == pytest.approx(3.21)
    assert dose["delivered"]["fluoro_time_s"] == pytest.approx(125.5)
    assert any(f.startswith("non-standard SR: Siemens radiation summary") for f in dose["flags"])
    assert "Doe" not in json.dumps(dose) and "RADSUM-1" not in json.dumps(dose)
    assert summarize_dose_report(path)["summary"].startswith("Siemens radiation summary")


def test_a_clip_on_a_record_without_event_times_is_flagged(tmp_path):
    from pathlib import Path

    clip = Path(__file__).parents[2] / "testdata" / "sample" / "lumbar-mbb-seed1" / "us_clip.dcm"
    path = radsum(tmp_path / "radsum.dcm")
    out = tmp_path / "report"
    args = ["dose", "report", "--rdsr", str(path), "--us", str(clip), "--out", str(out)]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    dose = json.loads((out / "dose.json").read_text())
    assert any("no event times" in f for f in dose["flags"])
