"""The registration as a DICOM Spatial Registration object (``registration.dcm``).

Direction: the matrix maps coordinates of the *moving* (ultrasound) frame of reference
into the *fixed* (fluoroscopy) frame of reference, which is the registered frame of the
object (the first Registration Sequence item, identity, names it).

Coordinates: these 2D images have no patient coordinate system, so each uses in-plane
millimetres: x = column × column spacing, y = row × row spacing, z = 0 (ultrasound: the
calibrated plane; fluoroscopy: the isocentre plane). A file's own Frame of Reference UID
is used when present; otherwise a new one is made and recorded in the object. Without
``include_phi`` every UID, date and identifier is de-identified as in the fused SC
(:mod:`fusion.deid`), with the same replacements, so the two objects of a case agree.

Spatial Registration matrices are 4×4 RIGID, RIGID_SCALE or AFFINE: a projective
(perspective) homography cannot be stored, so only rigid, similarity and affine
registrations are written.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np

from hybridfuse.dicom import is_dicom_stream
from hybridfuse.registration import Transform, TransformModel

from ._image import Image
from .deid import Deidentifier
from .errors import InputError

__all__ = ["write_registration_dicom", "read_registration_dicom", "SPATIAL_REGISTRATION"]

SPATIAL_REGISTRATION = "1.2.840.10008.5.1.4.1.1.66.1"
_TYPE = {
    TransformModel.RIGID: "RIGID",
    TransformModel.SIMILARITY: "RIGID_SCALE",
    TransformModel.AFFINE: "AFFINE",
}


def _mm_spacing(img: Image, flag: str) -> tuple[float, float]:
    if img.xray and img.xray.isocenter_spacing_mm:
        return img.xray.isocenter_spacing_mm
    return img.require_spacing(flag)


def _description(fixed: Image) -> str:
    """What the fixed millimetres are (LO, at most 64 characters).

    Without a magnification (SID/SOD) the fluoroscopy has no isocentre spacing and its
    millimetres are the spacing's own plane (the detector, for --fixed-spacing-mm): said,
    not passed off as the isocentre plane.
    """
    if fixed.xray and fixed.xray.isocenter_spacing_mm:
        return "US plane mm to fluoro isocentre-plane mm"
    return f"US plane mm to fluoro {fixed.spacing_plane.value}-plane mm (no SID/SOD)"[:64]


def _matrix4(transform: Transform, moving: Image, fixed: Image) -> np.ndarray:
    mm = transform.in_mm(
        _mm_spacing(moving, "--moving-spacing-mm"), _mm_spacing(fixed, "--fixed-spacing-mm")
    )
    if np.max(np.abs(mm[2, :2])) > 1e-12:
        raise InputError(
            "a projective transform cannot be written as a Spatial Registration "
            "(4x4 rigid/affine only): register with --model affine, or use "
            "transform.json"
        )
    m4 = np.eye(4)
    m4[:2, :2] = mm[:2, :2]
    m4[:2, 3] = mm[:2, 2]
    return m4


def _source_header(fixed: Image, moving: Image):
    """Header of the fixed image's DICOM file (else the moving one's), or None."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    for image in (fixed, moving):
        if image.source_path and image.uids:
            try:
                return pydicom.dcmread(
                    image.source_path,
                    stop_before_pixels=True,
                    force=is_dicom_stream(image.source_path),
                )
            except (InvalidDicomError, OSError, ValueError) as exc:
                raise InputError(
                    f"{image.source_path}: cannot re-read the DICOM header ({type(exc).__name__})"
                ) from exc
    return None


def _frame_of_reference(image: Image, role: str, deid: Deidentifier | None) -> str:
    """The image's Frame of Reference UID, or a new one (keyed and stable when de-identifying)."""
    from pydicom.uid import generate_uid

    if image.uids.get("frame_of_reference"):
        return image.uids["frame_of_reference"]
    if deid is None:
        return generate_uid()
    return deid.derived_uid("frame-of-reference", role, image.uids.get("sop_instance", ""))


def _reference(image: Image):
    from pydicom.dataset import Dataset

    ref = Dataset()
    ref.ReferencedSOPClassUID = image.uids["sop_class"]
    ref.ReferencedSOPInstanceUID = image.uids["sop_instance"]
    return ref


def _has_sop(image: Image) -> bool:
    return bool(image.uids.get("sop_instance") and image.uids.get("sop_class"))


def write_registration_dicom(
    path: str | os.PathLike,
    transform: Transform,
    fixed: Image,
    moving: Image,
    *,
    include_phi: bool = False,
    key: bytes | None = None,
    uid_map: str | os.PathLike | None = None,
) -> Path:
    """Write the Spatial Registration object; returns its path.

    Without ``include_phi`` it is de-identified like the fused SC (:mod:`fusion.deid`),
    with the same keyed UIDs, pseudonym and date shift for the same sources and ``key``
    (the user's pseudonym key when None). ``uid_map``: a CSV to write (or extend) with the
    source->new UID map; none is written when None.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid
    from pydicom.valuerep import format_number_as_ds

    from .dicom_out import derived_dataset, save_derived

    if transform.model not in _TYPE:
        raise InputError(
            f"a {transform.model.value} transform cannot be written as a Spatial "
            "Registration (rigid, similarity or affine only)"
        )
    m4 = _matrix4(transform, moving, fixed)
    src = _source_header(fixed, moving)
    deid = None if include_phi else Deidentifier(src, key)
    fixed_for = _frame_of_reference(fixed, "fixed", deid)
    moving_for = _frame_of_reference(moving, "moving", deid)
    source_uids = [img.uids.get("sop_instance", "") for img in (fixed, moving)]
    fingerprint = (*source_uids, fixed_for, moving_for, _TYPE[transform.model], m4.tobytes().hex())

    now = _dt.datetime.now()
    ds = derived_dataset(SPATIAL_REGISTRATION, src, deid=deid, fingerprint=fingerprint)
    ds.Modality = "REG"
    ds.SeriesInstanceUID = (
        deid.derived_uid(SPATIAL_REGISTRATION, "series", *source_uids) if deid else generate_uid()
    )
    ds.SeriesNumber = 901
    ds.Manufacturer = "hybridfuse"
    ds.FrameOfReferenceUID = fixed_for
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.ContentLabel = "HYBRIDFUSE_REG"
    ds.ContentDescription = _description(fixed)
    ds.ContentCreatorName = ""

    def item(for_uid, matrix, image: Image, matrix_type: str):
        it = Dataset()
        it.FrameOfReferenceUID = for_uid
        if _has_sop(image):
            it.ReferencedImageSequence = Sequence([_reference(image)])
        mat = Dataset()
        mat.FrameOfReferenceTransformationMatrix = [
            format_number_as_ds(float(v)) for v in matrix.ravel()
        ]
        mat.FrameOfReferenceTransformationMatrixType = matrix_type
        reg = Dataset()
        reg.MatrixSequence = Sequence([mat])
        reg.RegistrationTypeCodeSequence = Sequence([])  # Type 2: no coded registration type
        it.MatrixRegistrationSequence = Sequence([reg])
        return it

    ds.RegistrationSequence = Sequence(
        [
            item(fixed_for, np.eye(4), fixed, "RIGID"),  # the registered frame itself
            item(moving_for, m4, moving, _TYPE[transform.model]),
        ]
    )
    # Common Instance Reference: the images this registration refers to, by series.
    series = []
    for image in (fixed, moving):
        if image.uids.get("series") and _has_sop(image):
            ser = Dataset()
            ser.SeriesInstanceUID = image.uids["series"]
            ser.ReferencedInstanceSequence = Sequence([_reference(image)])
            series.append(ser)
    if series:
        ds.ReferencedSeriesSequence = Sequence(series)
    return save_derived(ds, path, deid, uid_map)


def read_registration_dicom(path: str | os.PathLike) -> tuple[np.ndarray, str, str]:
    """The 4×4 moving→fixed matrix and the two frame of reference UIDs (moving, fixed).

    A file that is not a readable Spatial Registration raises :class:`InputError` naming it.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, force=False)
        if str(ds.get("SOPClassUID", "")) != SPATIAL_REGISTRATION:
            raise InputError(f"{path}: not a Spatial Registration object")
        fixed_for = str(ds.FrameOfReferenceUID)
        for it in ds.RegistrationSequence:
            if str(it.FrameOfReferenceUID) != fixed_for:
                m = it.MatrixRegistrationSequence[0].MatrixSequence[0]
                matrix = np.asarray(m.FrameOfReferenceTransformationMatrix, float).reshape(4, 4)
                if not np.isfinite(matrix).all():
                    raise InputError(f"{path}: the registration matrix is not finite")
                return matrix, str(it.FrameOfReferenceUID), fixed_for
    except (InvalidDicomError, OSError, AttributeError, IndexError, ValueError, TypeError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(
            f"{path}: not a readable Spatial Registration ({type(exc).__name__})"
        ) from exc
    raise InputError(f"{path}: no registration item for a moving frame of reference")
