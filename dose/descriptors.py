"""Free text from a dose record (protocol names), cleaned of the patient's identifiers.

A protocol name is the X-ray unit's own label ("Gastro 7.5f/s Middle") and a physicist
needs it to read the events; but it is typed at a console and can hold a name, an ID or a
date. As DICOM's Clean Descriptors Option (PS3.15 E.3.5) does, the label is kept unless it
holds the record's patient name (any part of 3 letters or more), patient ID, a date or a
run of 6 digits or more; then it is withheld, without ``--include-phi``, and a flag says
how many were.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = ["WITHHELD", "clean_record", "identifying"]

#: What a withheld text reads as in ``events.csv`` and in flags.
WITHHELD = "(withheld: may identify the patient)"

# 2024-03-05, 20240305, 05.03.2024, 3/5/24: any way a console writes a date.
_DATE = re.compile(
    r"(?<!\d)(?:(?:19|20)\d\d[-./]?[01]\d[-./]?[0-3]\d|[0-3]?\d[-./][01]?\d[-./]\d{2,4})(?!\d)"
)
_LONG_NUMBER = re.compile(r"\d{6,}")


def _name_parts(patient: dict) -> list[str]:
    name = str(patient.get("name") or "")
    parts = re.split(r"[\^\s,=.\-]+", name)
    return [p.lower() for p in parts if len(p) >= 3 and not p.isdigit()]


def identifying(text: str | None, patient: dict) -> bool:
    """Whether ``text`` holds the patient's name or ID, a date or a long number."""
    if not text:
        return False
    low = text.lower()
    words = set(re.findall(r"[^\W\d_]+", low))
    if any(part in words for part in _name_parts(patient)):
        return True
    pid = str(patient.get("id") or "").strip().lower()
    if len(pid) >= 3 and pid in low:
        return True
    birth = str(patient.get("birth_date") or "").strip()
    if len(birth) >= 6 and birth in text:
        return True
    return bool(_DATE.search(text) or _LONG_NUMBER.search(text))


def clean_record(rec, flags: list[str]):
    """``rec`` with each identifying protocol name withheld, and a flag when one was."""
    events, withheld = [], 0
    for ev in rec.events:
        named = identifying(ev.protocol, rec.patient)
        events.append(dataclasses.replace(ev, protocol=WITHHELD) if named else ev)
        withheld += named
    if not withheld:
        return rec
    flags.append(
        f"{withheld} event(s)' protocol name withheld: it holds what may be the patient's "
        "name or ID, a date or a long number (--include-phi writes it)"
    )
    return dataclasses.replace(rec, events=events)
