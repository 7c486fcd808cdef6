r"""DICOM output a PACS accepts: a Multi-frame True Color Secondary Capture of the fusion.

Built with pydicom (highdicom's SCImage writes single frames only). A derived object:
new Series and SOP Instance UIDs, references to the source images, ImageType
DERIVED\\SECONDARY, ConversionType WSD, FrameTime, and BurnedInAnnotation stated
truthfully. With ``include_phi`` it belongs to the source's study and names the patient.
Without it the object is de-identified by :class:`fusion.deid.Deidentifier` (PS3.15 Basic
Profile with the Retain Longitudinal Temporal Information Modified Dates Option): keyed
replacement UIDs, a keyed patient pseudonym, no Study ID, dates shifted.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import math
import os
import re
from collections.abc import MutableSequence
from pathlib import Path

import numpy as np

from hybridfuse._safeio import atomic_file
from hybridfuse.dose.pseudonym import pseudonym

from .deid import Deidentifier

__all__ = [
    "write_fused_sc",
    "case_pseudonym",
    "derived_dataset",
    "save_derived",
    "MF_TRUE_COLOR_SC",
]

MF_TRUE_COLOR_SC = "1.2.840.10008.5.1.4.1.1.7.4"


def case_pseudonym(study_uid: str | None, key: bytes | None = None) -> str:
    """A stable label for a case: a keyed hash of the study, which only the key holder links.

    ``key`` defaults to the user's pseudonym key (:func:`dose.pseudonym.user_key`).
    """
    return "CASE-" + pseudonym(study_uid or "unknown", key)[:10].upper()


def derived_dataset(sop_class: str, src, *, deid: Deidentifier | None, fingerprint=()):
    """File meta, SOP Common, Patient and General Study modules of a derived object.

    The study and patient values are the source's; :func:`save_derived` de-identifies them
    when ``deid`` is given. The SOP Instance UID is random with ``deid`` None, else keyed
    from the SOP class and ``fingerprint`` (the object's content), so a re-run of the same
    fusion gives the same UID and a different fusion another.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    if deid is not None and not isinstance(deid, Deidentifier):
        raise TypeError("deid must be a Deidentifier or None (None keeps the patient data)")
    now = _dt.datetime.now()
    sop_uid = deid.derived_uid(sop_class, "sop", *fingerprint) if deid else generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        setattr(ds, kw, _source_value(src, kw))
    ds.PatientIdentityRemoved = "NO" if deid is None else "YES"
    study_uid = str(src.get("StudyInstanceUID", "") or "") if src is not None else ""
    ds.StudyInstanceUID = study_uid or (
        deid.derived_uid(sop_class, "study", *fingerprint) if deid else generate_uid()
    )
    for kw in ("StudyDate", "StudyTime", "AccessionNumber", "StudyID"):
        setattr(ds, kw, _source_value(src, kw))
    ds.ReferringPhysicianName = ""
    # General Series Laterality is Type 2C; absent, dciodvfy reports its condition as an
    # Error, empty only a Warning (docs/cli.md): the fusion asserts no side.
    ds.Laterality = ""
    return ds


#: Values a source may hold that its VR or the standard's enumeration refuses; copied
#: into a derived object they would make it invalid, so they are left empty (unknown).
_VALID_FORM = {
    "PatientSex": re.compile(r"[MFO]"),
    "PatientBirthDate": re.compile(r"\d{8}"),
    "StudyDate": re.compile(r"\d{8}"),
    "StudyTime": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"),
}


#: Longest value (PN: each component group) PS3.5 6.2 allows for the copied strings.
_MAX_CHARS = {"PatientName": 64, "PatientID": 64, "AccessionNumber": 16, "StudyID": 16}


def _fits_vr(keyword: str, text: str) -> bool:
    """Whether a copied value keeps its VR: length, one value, no control characters."""
    if "\\" in text or any(ord(c) < 0x20 and c != "\x1b" for c in text):
        return False  # each of these is VM 1; control characters only in ST/LT/UT
    limit = _MAX_CHARS.get(keyword)
    parts = text.split("=") if keyword == "PatientName" else [text]
    if limit is not None and any(len(part) > limit for part in parts):
        return False
    if keyword in ("PatientBirthDate", "StudyDate"):
        try:
            _dt.datetime.strptime(text, "%Y%m%d")
        except ValueError:  # month 13, 31 February
            return False
    if keyword == "StudyTime":
        hh, mm, ss = int(text[:2]), int(text[2:4] or 0), int(text[4:6] or 0)
        return hh < 24 and mm < 60 and ss < 61
    return True


def _source_value(src, keyword: str):
    """The source's value of ``keyword``, or "" when absent or not of a valid form.

    A value its VR refuses (too long, several values, a date that is no day) would make
    the derived object invalid; it is left empty (unknown) rather than cut, since a cut
    Patient ID would be another patient's.
    """
    value = src.get(keyword, "") if src is not None else ""
    if value is None or value == "":
        return ""
    if isinstance(value, (list, tuple, MutableSequence)):
        return ""  # a backslash made several values of a VM 1 attribute
    text = str(value).strip()
    form = _VALID_FORM.get(keyword)
    if form is not None and not form.fullmatch(text):
        return ""
    if not _fits_vr(keyword, str(value).rstrip(" ")):
        return ""
    return value


def save_derived(ds, path, deid: Deidentifier | None, uid_map=None) -> Path:
    """De-identify ``ds`` (when ``deid``), write it atomically, and the UID map if asked.

    The file appears complete or not at all (exclusive temporary name, renamed); the map
    is written only with ``deid`` and ``uid_map``, after the object.
    """
    if deid is not None:
        deid.apply(ds)
    path = Path(path)
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as fh:
            ds.save_as(fh, enforce_file_format=True)
            fh.flush()
            os.fsync(fh.fileno())
    if deid is not None and uid_map is not None:
        deid.write_map(uid_map)
    return path


class _FrameStream(io.RawIOBase):
    """The frames' bytes, one frame in memory at a time: no copy of the run is made.

    ``frames`` is any sequence (a list, or a spool on disk that reads a frame on access);
    pydicom streams a buffered element value to the file in chunks. An odd total gets its
    zero pad byte here, so the length pydicom records is the even length it writes.
    """

    def __init__(self, frames, shape: tuple[int, int, int]):
        super().__init__()
        self._frames, self._shape = frames, shape
        self._n, self._size = len(frames), math.prod(shape)
        total = self._n * self._size
        self._length = total + total % 2
        self._pos = 0
        self._cached: tuple[int, memoryview | None] = (-1, None)

    def _frame(self, k: int) -> memoryview:
        if self._cached[0] != k:
            arr = np.ascontiguousarray(self._frames[k], dtype=np.uint8)
            if arr.shape != self._shape:
                raise ValueError(f"fused frame {k} has shape {arr.shape}, not {self._shape}")
            self._cached = (k, memoryview(arr).cast("B"))
        return self._cached[1]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buf) -> int:
        if self._pos >= self._length:
            return 0
        k, offset = divmod(self._pos, self._size)
        view = self._frame(k)[offset:] if k < self._n else memoryview(b"\0")
        n = min(len(buf), view.nbytes)
        buf[:n] = view[:n]
        self._pos += n
        return n

    def digest(self):
        """sha256 of the pixel bytes, read frame by frame."""
        h = hashlib.sha256()
        for k in range(self._n):
            h.update(self._frame(k))
        return h


def _frame_shape(frames) -> tuple[int, int, int]:
    first = np.asarray(frames[0]) if len(frames) else np.empty(0)
    if first.ndim != 3 or first.shape[2] != 3:
        raise ValueError("frames must be a non-empty sequence of (rows, cols, 3) arrays")
    return first.shape


def write_fused_sc(
    path: str | os.PathLike,
    frames: list[np.ndarray],
    *,
    fixed_ds,
    moving_ds,
    frame_time_ms: float,
    include_phi: bool,
    burned_in: bool,
    description: str,
    key: bytes | None = None,
    uid_map: str | os.PathLike | None = None,
    pixel_aspect_ratio: list[int] | None = None,
) -> Path:
    """Write the fused RGB frames as one multi-frame true-colour SC object.

    Parameters
    ----------
    frames : sequence of uint8 (rows, cols, 3), read one at a time (a spool on disk will do)
    fixed_ds, moving_ds : pydicom Datasets (headers) of the source images, or None.
    frame_time_ms : display interval between frames.
    include_phi : keep the source's study, UIDs, dates and the patient's name, ID, birth
        date and sex; otherwise de-identify (see :mod:`fusion.deid`).
    burned_in : whether the frames carry burned-in text (sets BurnedInAnnotation).
    key : pseudonym key for de-identification; the user's key when None.
    uid_map : CSV to write (or extend) with the source->new UID map when de-identifying;
        none is written when None. Keep it private: it re-identifies the object.
    pixel_aspect_ratio : (vertical, horizontal) of a pixel that is not square, declared
        as PixelAspectRatio (0028,0034) so a viewer shows it unstretched; None: square.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    src = fixed_ds if fixed_ds is not None else moving_ds
    deid = None if include_phi else Deidentifier(src, key)
    shape = _frame_shape(frames)
    (rows, cols, _), n = shape, len(frames)
    pixels = _FrameStream(frames, shape)
    sources = [s for s in (fixed_ds, moving_ds) if s is not None and s.get("SOPInstanceUID")]
    source_uids = [str(s.SOPInstanceUID) for s in sources]
    fingerprint = ()
    if deid is not None:  # the content names the object: one UID per distinct fusion
        content = pixels.digest()
        content.update(f"{description}\0{frame_time_ms:.3f}\0{burned_in}".encode())
        if pixel_aspect_ratio:  # the same pixels shown in another shape: another object
            content.update(f"\0{pixel_aspect_ratio}".encode())
        fingerprint = (*source_uids, content.hexdigest())
    ds = derived_dataset(MF_TRUE_COLOR_SC, src, deid=deid, fingerprint=fingerprint)
    now = _dt.datetime.now()
    # General Series, SC Equipment, General Image
    ds.Modality = "OT"
    ds.SeriesInstanceUID = (
        deid.derived_uid(MF_TRUE_COLOR_SC, "series", *source_uids) if deid else generate_uid()
    )
    ds.SeriesNumber = 900
    ds.SeriesDescription = "hybridfuse US/fluoro fusion"
    ds.ConversionType = "WSD"
    ds.Manufacturer = "hybridfuse"
    ds.SecondaryCaptureDeviceManufacturer = "hybridfuse"
    ds.SecondaryCaptureDeviceManufacturerModelName = "hybridfuse fuse"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = description[:1024]
    ds.BurnedInAnnotation = "YES" if burned_in else "NO"
    refs = []
    for source in sources:
        item = Dataset()
        item.ReferencedSOPClassUID = source.SOPClassUID
        item.ReferencedSOPInstanceUID = source.SOPInstanceUID
        refs.append(item)
    if refs:
        ds.SourceImageSequence = Sequence(refs)
    # Image Pixel, Multi-frame, Cine
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if pixel_aspect_ratio:
        # Type 1C (Image Pixel module, PS3.3 C.7.6.3): required when pixels are not
        # square and no Pixel Spacing, Imager or Nominal Scanned Pixel Spacing is given.
        ds.PixelAspectRatio = [int(v) for v in pixel_aspect_ratio]
    ds.NumberOfFrames = n
    if n > 1:
        # Type 1C: only a multi-frame (cine) object has a frame increment to point to.
        ds.FrameIncrementPointer = 0x00181063  # FrameTime
        ds.FrameTime = f"{frame_time_ms:.3f}"
    ds.PixelData = io.BufferedReader(pixels)
    return save_derived(ds, path, deid, uid_map)
