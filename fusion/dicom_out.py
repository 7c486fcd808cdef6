r"""DICOM output a PACS accepts: a Multi-frame True Color Secondary Capture of the fusion.

Built with pydicom (highdicom's SCImage writes single frames only). A derived object:
new Series and SOP Instance UIDs, the source Study Instance UID kept, references to the
source images, ImageType DERIVED\\SECONDARY, ConversionType WSD, FrameTime, and
BurnedInAnnotation stated truthfully. Without ``include_phi`` the patient module carries
a pseudonym instead of the patient's name and ID (and says so).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from pathlib import Path

import numpy as np

__all__ = ["write_fused_sc", "case_pseudonym", "derived_dataset", "MF_TRUE_COLOR_SC"]

MF_TRUE_COLOR_SC = "1.2.840.10008.5.1.4.1.1.7.4"


def case_pseudonym(study_uid: str | None) -> str:
    """A stable label for a case that reveals nothing about the patient."""
    return "CASE-" + hashlib.sha256((study_uid or "unknown").encode()).hexdigest()[:10].upper()


def derived_dataset(sop_class: str, src, include_phi: bool):
    """File meta, SOP Common, Patient and General Study modules of a derived object.

    The new object belongs to the source's study (its Study Instance UID is kept). The
    patient module copies the source's name, ID, birth date and sex only with
    ``include_phi``; otherwise it carries a case pseudonym and says the identity was
    removed. Study date, time and accession number are kept only with ``include_phi``.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    now = _dt.datetime.now()
    sop_uid = generate_uid()
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
    study_uid = str(src.get("StudyInstanceUID", "")) if src is not None else ""
    if include_phi and src is not None:
        for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
            setattr(ds, kw, src.get(kw, ""))
        ds.PatientIdentityRemoved = "NO"
    else:
        label = case_pseudonym(study_uid)
        ds.PatientName = f"ANONYMIZED^{label}"
        ds.PatientID = label
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "hybridfuse: patient name and ID replaced by a case pseudonym"
    ds.StudyInstanceUID = study_uid or generate_uid()
    for kw in ("StudyDate", "StudyTime", "AccessionNumber", "StudyID"):
        value = src.get(kw, "") if (src is not None and (include_phi or kw == "StudyID")) else ""
        setattr(ds, kw, value)
    ds.ReferringPhysicianName = ""
    ds.Laterality = ""  # General Series, Type 2C: no paired body part is asserted
    return ds


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
) -> Path:
    """Write the fused RGB frames as one multi-frame true-colour SC object.

    Parameters
    ----------
    frames : list of uint8 (rows, cols, 3)
    fixed_ds, moving_ds : pydicom Datasets (headers) of the source images, or None.
    frame_time_ms : display interval between frames.
    include_phi : copy the patient's name, ID, birth date and sex from the source.
    burned_in : whether the frames carry burned-in text (sets BurnedInAnnotation).
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    ds = derived_dataset(
        MF_TRUE_COLOR_SC, fixed_ds if fixed_ds is not None else moving_ds, include_phi
    )
    now = _dt.datetime.now()
    # General Series, SC Equipment, General Image
    ds.Modality = "OT"
    ds.SeriesInstanceUID = generate_uid()
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
    for source in (fixed_ds, moving_ds):
        if source is not None and source.get("SOPInstanceUID"):
            item = Dataset()
            item.ReferencedSOPClassUID = source.SOPClassUID
            item.ReferencedSOPInstanceUID = source.SOPInstanceUID
            refs.append(item)
    if refs:
        ds.SourceImageSequence = Sequence(refs)
    # Image Pixel, Multi-frame, Cine
    arr = np.ascontiguousarray(np.stack(frames), dtype=np.uint8)
    n, rows, cols, _ = arr.shape
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = n
    ds.FrameIncrementPointer = 0x00181063  # FrameTime
    ds.FrameTime = f"{frame_time_ms:.3f}"
    ds.PixelData = arr.tobytes()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)
    return path
