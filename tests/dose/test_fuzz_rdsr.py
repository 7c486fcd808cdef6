"""Mutated dose reports: a clean error or a flagged result, never a crash or a silent number."""

from __future__ import annotations

import copy
import functools
import tempfile
import warnings
from pathlib import Path
from unittest import mock

import pydicom
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridfuse.dose import DoseInputError, read_rdsr, report
from hybridfuse.dose.report import build_dose_report
from hybridfuse.testdata import sample_case

OPS = ["delete", "garble_unit", "empty_value", "junk_number", "wrong_scheme", "retype"]
JUNK_UNITS = ["furlong", "", "Gy.m", "mGy/s", "??", "1e3"]


def _items(ds):
    out = []

    def walk(node):
        for child in node.get("ContentSequence", []) or []:
            out.append((node, child))
            walk(child)

    walk(ds)
    return out


@functools.lru_cache(maxsize=1)
def _original():
    return pydicom.dcmread(sample_case() / "rdsr.dcm")


def _mutate(ds, ops, draw_index, junk):
    """Apply ``ops``; return the concept codes whose garbled unit is still there to be read.

    A garbled item that another operation deleted, emptied, renamed or retyped (itself or
    an ancestor) is no longer read as that total, so it is not returned.
    """
    garbled, touched = [], set()
    for op, idx in ops:
        items = _items(ds)
        if not items:
            break
        parent, item = items[idx % len(items)]
        code = (
            item.ConceptNameCodeSequence[0].CodeValue
            if item.get("ConceptNameCodeSequence")
            else None
        )
        if op == "garble_unit" and item.get("MeasuredValueSequence"):
            item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue = junk
            garbled.append((item, code))
            continue
        touched.add(id(item))
        if op == "delete":
            parent.ContentSequence.remove(item)
        elif op == "empty_value" and item.get("ValueType") == "NUM":
            item.MeasuredValueSequence = pydicom.Sequence([])
        elif op == "junk_number" and item.get("MeasuredValueSequence"):
            # Written as LO so that the file really holds the junk a broken unit writes.
            mv = item.MeasuredValueSequence[0]
            mv[0x0040A30A] = pydicom.DataElement(0x0040A30A, "LO", "abc")
        elif op == "wrong_scheme" and item.get("ConceptNameCodeSequence"):
            item.ConceptNameCodeSequence[0].CodingSchemeDesignator = "99XYZ"
        elif op == "retype":
            item.ValueType = "TEXT"
    parents = {id(child): node for node, child in _items(ds)}

    def intact(item) -> bool:
        node = item
        while id(node) in parents:
            if id(node) in touched:
                return False
            node = parents[id(node)]
        return node is ds  # still attached to the document

    return {code for item, code in garbled if intact(item)}


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 10_000)), min_size=1, max_size=6),
    junk=st.sampled_from(JUNK_UNITS),
)
def test_mutated_reports_fail_cleanly_or_flag(ops, junk):
    ds = copy.deepcopy(_original())
    path = Path(tempfile.mkdtemp()) / "mutated.dcm"
    with warnings.catch_warnings():  # the test writes invalid values on purpose
        warnings.simplefilter("ignore", UserWarning)
        garbled = _mutate(ds, ops, None, junk)
        ds.save_as(path)
    # The report reads the file once, and that record is the one checked below: reading
    # it a second time here doubled the test's time (the SR walk is most of it).
    records = []

    def reading(p):
        records.append(read_rdsr(p))
        return records[-1]

    with mock.patch.object(report, "read_rdsr", reading):
        try:
            rep = build_dose_report(path)  # must not crash either
        except DoseInputError:
            if records:  # read, then refused: not a clean refusal of the file
                raise
            return
    (rec,) = records
    for value in rep["delivered"].values():
        if isinstance(value, float):
            assert value == value  # never NaN
    # A total whose unit was garbled (and not otherwise altered) is never reported
    # from that item: unknown or from event sums, and flagged either way.
    if "113722" in garbled:
        acc = [p.dap_total_gy_cm2 for p in rec.planes.values()]
        assert all(v is None for v in acc)
        assert any("unit" in f for f in rec.flags), rec.flags


def _index_of(ds, code: str) -> int:
    """Position in :func:`_items` of the first item whose concept is ``code``."""
    return next(
        i
        for i, (_, item) in enumerate(_items(ds))
        if item.get("ConceptNameCodeSequence") and item.ConceptNameCodeSequence[0].CodeValue == code
    )


def test_garbled_unit_on_the_dap_total_is_unknown_and_flagged():
    ds = copy.deepcopy(_original())
    idx = _index_of(ds, "113722")
    path = Path(tempfile.mkdtemp()) / "garbled.dcm"
    assert _mutate(ds, [("garble_unit", idx)], None, "furlong") == {"113722"}
    ds.save_as(path)
    rec = read_rdsr(path)
    assert rec.planes["single"].dap_total_gy_cm2 is None
    assert any("furlong" in f for f in rec.flags)
    rep = build_dose_report(path)
    # The delivered DAP then comes from the event sums, and says so.
    assert rep["delivered"]["sources"]["dap_total_gy_cm2"] == "sum of irradiation events"


def test_an_unreadable_dap_total_is_unknown_and_flagged(tmp_path):
    ds = copy.deepcopy(_original())
    idx = _index_of(ds, "113722")
    path = tmp_path / "junk.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _mutate(ds, [("junk_number", idx)], None, "")
        ds.save_as(path)
    rec = read_rdsr(path)
    assert rec.planes["single"].dap_total_gy_cm2 is None
    assert any("'abc' is not a number" in f for f in rec.flags), rec.flags
