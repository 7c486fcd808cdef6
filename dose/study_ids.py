"""The study's accession number and date from a dose report's header (patient data).

They identify a patient's examination, so the registry keeps them only when ingested with
``--include-phi``; the date alone also gives the acquisition month of a procedure that
has no irradiation event times (a Siemens radiation summary).
"""

from __future__ import annotations

import datetime as _dt
import os

__all__ = ["study_identifiers"]


def study_identifiers(path: str | os.PathLike) -> dict:
    """``accession_number`` (text or None) and ``study_date`` (a date or None) of a file.

    Read from the header only (the file was already read as a dose report); a value that
    is absent, blank or not a valid DICOM date is None, never a guess.
    """
    import pydicom

    from hybridfuse._dicomread import quiet_pydicom
    from hybridfuse.dicom import is_dicom_stream, parse_datetime

    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(
                path,
                stop_before_pixels=True,
                specific_tags=["AccessionNumber", "StudyDate"],
                force=is_dicom_stream(path),
            )
        accession = str(ds.get("AccessionNumber", "") or "").strip()
        date_text = str(ds.get("StudyDate", "") or "").strip()
    except Exception:  # noqa: BLE001 - the file was read once already; unknown, not a crash
        return {"accession_number": None, "study_date": None}
    when = parse_datetime(date_text) if len(date_text) == 8 else None
    return {
        "accession_number": accession or None,
        "study_date": when.date() if isinstance(when, _dt.datetime) else None,
    }
