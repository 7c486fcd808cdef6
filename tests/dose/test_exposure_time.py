"""Exposure Time (TID 10003) under its current code 113824 and its retired code 113735."""

from __future__ import annotations

import copy

import pydicom
import pytest

from hybridfuse.dose import read_rdsr
from hybridfuse.testdata import sample_case


def _events(ds):
    out = []

    def walk(node):
        for child in node.get("ContentSequence", []) or []:
            name = child.get("ConceptNameCodeSequence")
            if name and name[0].CodeValue == "113706":  # Irradiation Event X-Ray Data
                out.append(child)
            walk(child)

    walk(ds)
    return out


def _exposure_item(template, code: str, value: str):
    item = copy.deepcopy(template)
    item.ConceptNameCodeSequence[0].CodeValue = code
    item.ConceptNameCodeSequence[0].CodeMeaning = "Exposure Time"
    mv = item.MeasuredValueSequence[0]
    mv.NumericValue = value
    unit = mv.MeasurementUnitsCodeSequence[0]
    unit.CodeValue, unit.CodeMeaning = "ms", "millisecond"
    return item


@pytest.fixture
def rdsr_with_exposure_times(tmp_path):
    ds = pydicom.dcmread(sample_case() / "rdsr.dcm")
    events = _events(ds)
    kvp = next(
        c
        for c in events[0].ContentSequence
        if c.get("ConceptNameCodeSequence") and c.ConceptNameCodeSequence[0].CodeValue == "113733"
    )
    events[0].ContentSequence.append(_exposure_item(kvp, "113824", "12.5"))
    events[1].ContentSequence.append(_exposure_item(kvp, "113735", "99"))
    events[1].ContentSequence.append(_exposure_item(kvp, "113824", "7.25"))
    events[2].ContentSequence.append(_exposure_item(kvp, "113735", "30"))
    path = tmp_path / "rdsr.dcm"
    ds.save_as(path)
    return path, len(events)


def test_both_codes_are_read_and_the_current_one_wins(rdsr_with_exposure_times):
    path, n = rdsr_with_exposure_times
    events = read_rdsr(path).events
    assert len(events) == n
    assert [e.exposure_time_ms for e in events[:3]] == [12.5, 7.25, 30.0]
    assert all(e.exposure_time_ms is None for e in events[3:])
    assert "exposure_time_ms" not in events[1].multi_valued  # not two readings of one value


def test_a_tube_voltage_past_any_x_ray_tube_is_unknown_and_flagged(tmp_path):
    # A kVp of 5000 was read as real (the bound was 10,000 kV); tubes run at 20-150 kV.
    ds = pydicom.dcmread(sample_case() / "rdsr.dcm")
    first = _events(ds)[0]
    kvp = next(
        c
        for c in first.ContentSequence
        if c.get("ConceptNameCodeSequence") and c.ConceptNameCodeSequence[0].CodeValue == "113733"
    )
    right = float(kvp.MeasuredValueSequence[0].NumericValue)
    kvp.MeasuredValueSequence[0].NumericValue = "5000"
    ds.save_as(tmp_path / "rdsr.dcm")
    record = read_rdsr(tmp_path / "rdsr.dcm")
    assert record.events[0].kvp_kv is None
    assert any("5000 kV exceeds the plausible 300" in f for f in record.flags), record.flags
    assert read_rdsr(sample_case() / "rdsr.dcm").events[0].kvp_kv == right
