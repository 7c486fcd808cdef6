"""De-identification of the DICOM objects hybridfuse derives (fused SC, registration).

DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile with the Retain
Longitudinal Temporal Information with Modified Dates Option (PS3.16 CID 7050 codes
113100 and 113107). Everything is keyed with the user's pseudonym key
(:func:`dose.pseudonym.user_key`), so the replacements are stable for one user (the fused
SC and the registration of one case agree, and a re-run gives the same values) but cannot
be recomputed by someone who holds the study and not the key:

- every UID that is not a DICOM-defined one (Study, Series, SOP Instance, Frame of
  Reference, references) becomes ``2.25.<HMAC as a UUID>``; the source->new map is kept
  only where the caller asks (:meth:`Deidentifier.write_map`);
- Patient Name and ID become a keyed pseudonym; Study ID, accession number, birth date,
  sex and referring physician are emptied;
- every date (DA, and the date part of DT) moves back by one keyed whole number of days
  (1 to :data:`MAX_SHIFT_DAYS`) per patient; times of day are kept, so intervals survive.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import hmac
import io
import os
import uuid
from pathlib import Path

from hybridfuse._safeio import write_text
from hybridfuse.dose.pseudonym import pseudonym, user_key

__all__ = [
    "DEID_METHOD",
    "DEID_METHOD_CODES",
    "MAX_SHIFT_DAYS",
    "Deidentifier",
    "keyed_uid",
    "read_uid_map",
]

#: The largest date shift, in days back; the shift is 1..MAX_SHIFT_DAYS, never 0.
MAX_SHIFT_DAYS = 365
#: PS3.16 CID 7050 (De-identification Method), coding scheme DCM.
DEID_METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
)
#: De-identification Method (0012,0063), LO: at most 64 characters.
DEID_METHOD = "PS3.15 Basic Profile, Retain Longitudinal Modified Dates Option"

# UIDs under the DICOM root name SOP classes, transfer syntaxes and coding schemes: never
# a patient's data, and replacing them would break the object.
_DICOM_ROOT = "1.2.840.10008."
_MAP_HEADER = ("source_uid", "deidentified_uid", "attribute")


def _mac(key: bytes, domain: str, text: str) -> bytes:
    # The domain keeps UIDs, derived UIDs and date shifts independent under one key.
    return hmac.new(key, f"hybridfuse/{domain}\0{text}".encode(), hashlib.sha256).digest()


def keyed_uid(key: bytes, domain: str, text: str) -> str:
    """``2.25.<int>`` from a keyed hash of ``text``: an RFC 9562 version 8 UUID (PS3.5 B.2).

    The version and variant bits are set so the integer is a valid UUID, as the 2.25 root
    requires; the result is at most 44 characters.
    """
    b = bytearray(_mac(key, domain, text)[:16])
    b[6] = (b[6] & 0x0F) | 0x80  # version 8: custom (here: keyed hash)
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 9562 variant
    return f"2.25.{uuid.UUID(bytes=bytes(b)).int}"


class Deidentifier:
    """Keyed replacements for the objects derived from one source dataset.

    Parameters
    ----------
    src : pydicom Dataset or None
        Header of the source image; its Patient ID (else Study Instance UID) anchors the
        pseudonym and the date shift, so every object of one patient shifts alike.
    key : bytes, optional
        The secret; the user's pseudonym key when None.
    """

    def __init__(self, src, key: bytes | None = None):
        self.key = user_key() if key is None else key
        pid = str(src.get("PatientID", "") or "").strip() if src is not None else ""
        study = str(src.get("StudyInstanceUID", "") or "") if src is not None else ""
        anchor = pid or study or "unknown"
        self.patient_label = pseudonym(anchor, self.key)
        digest = _mac(self.key, "date-shift", anchor)
        self.shift_days = 1 + int.from_bytes(digest[:8], "big") % MAX_SHIFT_DAYS
        #: source UID -> (new UID, attribute it was first seen in)
        self.mapping: dict[str, tuple[str, str]] = {}
        self.own: set[str] = set()

    def uid(self, source_uid: str, attribute: str = "") -> str:
        """The replacement of a source UID (recorded in :attr:`mapping`)."""
        source_uid = str(source_uid)
        if source_uid.startswith(_DICOM_ROOT) or source_uid in self.own or not source_uid:
            return source_uid
        if source_uid not in self.mapping:
            self.mapping[source_uid] = (keyed_uid(self.key, "uid", source_uid), attribute)
        return self.mapping[source_uid][0]

    def derived_uid(self, *parts: str) -> str:
        """A UID of an object hybridfuse makes: stable for the same parts and key."""
        new = keyed_uid(self.key, "derived", "\0".join(str(p) for p in parts))
        self.own.add(new)
        return new

    def shift_date(self, value: str) -> str:
        """A DA value moved back by :attr:`shift_days`; an unreadable date is emptied."""
        value = str(value).strip()
        if not value:
            return ""
        try:
            day = _dt.datetime.strptime(value, "%Y%m%d").date()
        except ValueError:
            return ""
        return (day - _dt.timedelta(days=self.shift_days)).strftime("%Y%m%d")

    def shift_datetime(self, value: str) -> str:
        """A DT value with its date moved back; time of day and UTC offset kept."""
        value = str(value).strip()
        if not value:
            return ""
        shifted = self.shift_date(value[:8])
        return shifted + value[8:] if shifted else ""

    def apply(self, ds) -> None:
        """De-identify ``ds`` in place: UIDs, dates, the patient and study identifiers.

        Walks every element, inside sequences too, so a UID or date added to a writer later
        is covered without a change here.
        """
        self._walk(ds)
        ds.PatientName = f"ANONYMIZED^{self.patient_label}"
        ds.PatientID = self.patient_label
        for kw in ("PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber"):
            setattr(ds, kw, "")
        ds.ReferringPhysicianName = ""
        self._mark(ds)
        if getattr(ds, "file_meta", None) is not None:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    def _walk(self, ds) -> None:
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    self._walk(item)
            elif elem.VR in ("UI", "DA", "DT") and elem.value not in (None, ""):
                values = [elem.value] if elem.VM == 1 else list(elem.value)
                if elem.VR == "UI":
                    new = [self.uid(str(v), elem.keyword) for v in values]
                else:
                    fix = self.shift_date if elem.VR == "DA" else self.shift_datetime
                    new = [fix(v) for v in values]
                elem.value = new[0] if elem.VM == 1 else new

    def _mark(self, ds) -> None:
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence

        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = DEID_METHOD
        items = []
        for value, meaning in DEID_METHOD_CODES:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        ds.LongitudinalTemporalInformationModified = "MODIFIED"

    def write_map(self, path: str | os.PathLike) -> Path:
        """Write (or extend) the source->new UID map as CSV; private: it re-identifies.

        Rows already in ``path`` are kept, so the objects of one case can share one map.
        """
        path = Path(path)
        rows = read_uid_map(path) if path.exists() else {}
        for src, (new, attr) in self.mapping.items():
            rows.setdefault(src, (new, attr))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(_MAP_HEADER)
        for src in sorted(rows):
            writer.writerow((src, *rows[src]))
        return write_text(path, buf.getvalue())


def read_uid_map(path: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """The rows of a UID map written by :meth:`Deidentifier.write_map`."""
    from .errors import InputError

    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        if tuple(next(reader, ())) != _MAP_HEADER:
            raise InputError(f"{path}: not a hybridfuse UID map (header {','.join(_MAP_HEADER)})")
        return {r[0]: (r[1], r[2]) for r in reader if len(r) == 3}
