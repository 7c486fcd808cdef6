"""Edits of an RDSR's content tree shared by the dose and CLI tests."""

from __future__ import annotations

import datetime as dt


def shift_datetimes(items, days: int) -> None:
    """Move every DATETIME content item (event starts, start and end of the study)."""
    for item in items:
        if item.get("ValueType") == "DATETIME":
            when = dt.datetime.strptime(item.DateTime[:14], "%Y%m%d%H%M%S")
            item.DateTime = f"{when + dt.timedelta(days=days):%Y%m%d%H%M%S}.000000"
        if "ContentSequence" in item:
            shift_datetimes(item.ContentSequence, days)


def set_protocol(src, dst, text: str, **header):
    """``src`` saved to ``dst`` with every event's protocol name ``text`` (and ``header``
    attributes, e.g. ``PatientName``, set)."""
    import pydicom

    from hybridfuse.dose.rdsr import _walk

    ds = pydicom.dcmread(src)
    for item in _walk(ds):
        seq = item.get("ConceptNameCodeSequence")
        if seq and seq[0].CodeValue == "125203":
            if "TextValue" in item:
                item.TextValue = text
            else:
                item.ConceptCodeSequence[0].CodeMeaning = text
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    ds.save_as(dst)
    return dst


def set_numbers(src, dst, code: str, value: float):
    """``src`` saved to ``dst`` with every numeric item of concept ``code`` set to ``value``."""
    import pydicom

    from hybridfuse.dose.rdsr import _walk

    ds = pydicom.dcmread(src)
    for item in _walk(ds):
        seq = item.get("ConceptNameCodeSequence")
        if seq and seq[0].CodeValue == code and item.get("ValueType") == "NUM":
            item.MeasuredValueSequence[0].NumericValue = value
    ds.save_as(dst)
    return dst
