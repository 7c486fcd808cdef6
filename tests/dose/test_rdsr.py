"""RDSR reading: vendor totals to stored precision, units by code, rejections."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from hybridfuse.dose import DoseInputError, UnitError, convert, normalise_unit, read_rdsr
from tests.conftest import REALDATA, realdata_rows


def _close(value, expected_text):
    expected = float(expected_text)
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("row", realdata_rows("rdsr"))
def test_vendor_totals_equal_what_the_unit_recorded(row):
    rec = read_rdsr(REALDATA / "rdsr" / row["filename"])
    _close(rec.total("dap_total_gy_cm2"), float(row["dap_total_Gym2"]) * 1e4)
    _close(rec.total("dose_rp_total_mgy"), float(row["rp_dose_total_Gy"]) * 1e3)
    _close(rec.total("fluoro_dap_gy_cm2"), float(row["fluoro_dap_total_Gym2"]) * 1e4)
    _close(rec.total("fluoro_time_s"), row["total_fluoro_time_s"])
    assert len(rec.events) == int(row["n_events"])
    assert rec.n_fluoro_events == int(row["n_fluoro_events"])
    assert rec.n_acquisition_events == int(row["n_acq_events"])
    assert len(rec.planes) == int(row["n_planes"])
    event_sum = sum(e.dap_gy_cm2 for e in rec.events if e.dap_gy_cm2 is not None)
    _close(event_sum, float(row["event_dap_sum_Gym2"]) * 1e4)
    assert rec.has_fluoroscopy


def test_synthetic_rdsr_matches_the_generator(synthetic_case):
    case, truth = synthetic_case
    rec = read_rdsr(case / "rdsr.dcm")
    delivered = truth["dose"]["delivered"]
    assert rec.total("dap_total_gy_cm2") == pytest.approx(delivered["dap_total_gy_cm2"], rel=1e-9)
    assert rec.total("dose_rp_total_mgy") == pytest.approx(delivered["ka_r_total_mgy"], rel=1e-9)
    assert rec.total("fluoro_time_s") == pytest.approx(delivered["fluoro_time_s"])
    assert len(rec.events) == delivered["n_events"]
    assert rec.flags == []


@pytest.mark.parametrize(
    ("unit", "kind", "value", "expected"),
    [
        ("Gy.m2", "dap", 1.0, 1e4),
        ("Gym2", "dap", 2.0, 2e4),
        ("dGy.cm2", "dap", 5.0, 0.5),
        ("uGy.m2", "dap", 100.0, 1.0),
        ("µGy.m2", "dap", 100.0, 1.0),
        ("Gy*cm^2", "dap", 3.0, 3.0),
        ("Gy", "dose", 0.01, 10.0),
        ("uGy", "dose", 500.0, 0.5),
        ("ms", "time", 250.0, 0.25),
        ("min", "time", 2.0, 120.0),
        ("{pulse}/s", "rate", 7.5, 7.5),
        ("m2", "area", 0.01, 100.0),
    ],
)
def test_units_are_converted_from_their_code(unit, kind, value, expected):
    assert convert(value, unit, kind) == pytest.approx(expected)


def test_unknown_unit_is_refused_not_assumed():
    with pytest.raises(UnitError, match="not a known dap unit"):
        convert(1.0, "Gy", "dap")
    assert normalise_unit("Gym2") == "gy.m2"


# --- hand-built reports ------------------------------------------------------------------


def _code(value, scheme, meaning):
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def _item(rel, vtype, concept, **kw):
    it = Dataset()
    it.RelationshipType, it.ValueType = rel, vtype
    it.ConceptNameCodeSequence = Sequence([_code(*concept)])
    for k, v in kw.items():
        setattr(it, k, v)
    return it


def _num(code, value, unit, meaning="x"):
    it = _item("CONTAINS", "NUM", (code, "DCM", meaning))
    mv = Dataset()
    if value is not None:
        mv.NumericValue = value
    mv.MeasurementUnitsCodeSequence = Sequence([_code(unit, "UCUM", unit)])
    it.MeasuredValueSequence = Sequence([mv] if value is not None else [])
    return it


def _report(path, children, sop="1.2.840.10008.5.1.4.1.1.88.67", root="113701"):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop, meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code(root, "DCM", "Report")])
    ds.ContentSequence = Sequence(children)
    ds.save_as(path, enforce_file_format=True)
    return path


def _plane_single():
    it = _item("HAS CONCEPT MOD", "CODE", ("113764", "DCM", "Acquisition Plane"))
    it.ConceptCodeSequence = Sequence([_code("113622", "DCM", "Single Plane")])
    return it


def test_meaning_is_ignored_and_empty_values_are_missing(tmp_path):
    acc = _item(
        "CONTAINS",
        "CONTAINER",
        ("113702", "DCM", "Accumulated"),
        ContentSequence=Sequence(
            [
                _plane_single(),
                _num("113722", "1.5", "Gy.cm2", meaning="Dose Area Prodcut Totl"),
                _num("113725", None, "mGy"),
            ]
        ),
    )
    rec = read_rdsr(_report(tmp_path / "r.dcm", [acc]))
    assert rec.total("dap_total_gy_cm2") == pytest.approx(1.5)
    assert rec.total("dose_rp_total_mgy") is None  # empty measured value: unknown, not 0


def test_unknown_unit_makes_the_value_unknown_and_flags_it(tmp_path):
    acc = _item(
        "CONTAINS",
        "CONTAINER",
        ("113702", "DCM", "Accumulated"),
        ContentSequence=Sequence([_plane_single(), _num("113722", "2", "furlong")]),
    )
    rec = read_rdsr(_report(tmp_path / "r.dcm", [acc]))
    assert rec.total("dap_total_gy_cm2") is None
    assert any("furlong" in f for f in rec.flags)


def test_two_planes_are_summed_and_kept_apart(tmp_path):
    def plane(code, dap):
        p = _item("HAS CONCEPT MOD", "CODE", ("113764", "DCM", "Acquisition Plane"))
        p.ConceptCodeSequence = Sequence([_code(code, "DCM", "Plane")])
        return _item(
            "CONTAINS",
            "CONTAINER",
            ("113702", "DCM", "Accumulated"),
            ContentSequence=Sequence([p, _num("113722", dap, "Gy.m2")]),
        )

    rec = read_rdsr(
        _report(tmp_path / "r.dcm", [plane("113620", "0.0001"), plane("113621", "0.0002")])
    )
    assert set(rec.planes) == {"A", "B"}
    assert rec.planes["B"].dap_total_gy_cm2 == pytest.approx(2.0)
    assert rec.total("dap_total_gy_cm2") == pytest.approx(3.0)


def test_ct_dose_report_is_rejected(tmp_path):
    proc = _item("HAS CONCEPT MOD", "CODE", ("121058", "DCM", "Procedure reported"))
    proc.ConceptCodeSequence = Sequence([_code("P5-08000", "SRT", "Computed Tomography")])
    with pytest.raises(DoseInputError, match="CT dose report"):
        read_rdsr(_report(tmp_path / "ct.dcm", [proc]))


def test_non_dose_sr_is_rejected(tmp_path):
    with pytest.raises(DoseInputError, match="not an X-Ray Radiation Dose Report"):
        read_rdsr(
            _report(tmp_path / "sr.dcm", [], sop="1.2.840.10008.5.1.4.1.1.88.33", root="126000")
        )


def test_radiopharmaceutical_report_is_rejected(tmp_path):
    with pytest.raises(DoseInputError, match="Radiopharmaceutical"):
        read_rdsr(_report(tmp_path / "rp.dcm", [], sop="1.2.840.10008.5.1.4.1.1.88.68"))


def test_image_is_not_a_dose_report(synthetic_case):
    case, _ = synthetic_case
    with pytest.raises(DoseInputError, match="not a structured report"):
        read_rdsr(case / "fluoro_run01_scout_lateral.dcm")


def test_private_summary_is_read_by_code_and_flagged(tmp_path):
    # A vendor's own SR: a private root, the standard containers nested one level down.
    acc = _item(
        "CONTAINS",
        "CONTAINER",
        ("113702", "DCM", "Accumulated"),
        ContentSequence=Sequence([_plane_single(), _num("113722", "0.0004", "Gy.m2")]),
    )
    wrapper = _item(
        "CONTAINS", "CONTAINER", ("PRIV01", "99ACME", "Vendor Section"), ContentSequence=[acc]
    )
    path = _report(
        tmp_path / "private.dcm", [wrapper], sop="1.2.840.10008.5.1.4.1.1.88.33", root="PRIV00"
    )
    rec = read_rdsr(path)
    assert rec.total("dap_total_gy_cm2") == pytest.approx(4.0)
    assert rec.total("dose_rp_total_mgy") is None  # not carried: unknown, not 0
    assert any("non-standard SR" in f and "PRIV00" in f for f in rec.flags)


def test_private_sr_without_dose_containers_is_refused(tmp_path):
    note = _item("CONTAINS", "TEXT", ("PRIV02", "99ACME", "Remark"), TextValue="dose ok")
    path = _report(tmp_path / "p.dcm", [note], sop="1.2.840.10008.5.1.4.1.1.88.33", root="PRIV00")
    with pytest.raises(DoseInputError, match="not an X-Ray Radiation Dose Report"):
        read_rdsr(path)
