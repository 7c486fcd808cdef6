"""The image type every stage of the pipeline passes around: pixels with their geometry."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from hybridfuse.registration.geometry import ConeBeamGeometry

from .errors import InputError, MissingCalibrationError
from .imaged_area import ImagedArea

__all__ = [
    "MIN_FLUORO_SIZE_PX",
    "Image",
    "Modality",
    "SpacingPlane",
    "UltrasoundRegion",
    "XRayGeometry",
    "CollimatorShape",
]


#: Smallest fluoroscopy (rows and columns) worth registering or fusing against: below
#: this no anatomy is resolved and landmarks cannot fall inside the field.
MIN_FLUORO_SIZE_PX = 32


class Modality(str, Enum):
    """Imaging modality, as DICOM (0008,0060) *Modality* spells it."""

    US = "US"
    XA = "XA"
    RF = "RF"
    DX = "DX"
    CR = "CR"
    OT = "OT"

    @property
    def is_xray(self) -> bool:
        """True for projection X-ray modalities."""
        return self in (Modality.XA, Modality.RF, Modality.DX, Modality.CR)


class SpacingPlane(str, Enum):
    """The physical plane in which :attr:`Image.pixel_spacing_mm` holds."""

    ULTRASOUND = "ultrasound-scan-plane"
    DETECTOR = "detector"
    ISOCENTER = "isocenter"
    PATIENT = "patient"
    UNSPECIFIED = "unspecified"


class CollimatorShape(str, Enum):
    """Shape of the X-ray collimator (DICOM (0018,1600) *Shutter Shape*)."""

    CIRCULAR = "CIRCULAR"
    RECTANGULAR = "RECTANGULAR"
    NONE = "NONE"


@dataclass(frozen=True)
class UltrasoundRegion:
    """One item of DICOM (0018,6011) *Sequence of Ultrasound Regions*.

    Pixel bounds are absolute, 0-based and inclusive, as DICOM stores them
    (*Region Location Min X0* … *Max Y1*). The reference pixel is converted from the
    region-relative value DICOM stores to an absolute pixel position.

    Parameters
    ----------
    x0, y0, x1, y1 : int
        Region bounds in screen pixels (columns x, rows y), inclusive.
    delta_x_mm, delta_y_mm : float or None
        Physical size of one pixel (mm) along x and y, or None when the region is not
        spatially calibrated in cm (*Physical Units X/Y Direction* other than 3).
    reference_x, reference_y : float
        Absolute pixel (x, y) of the reference pixel (usually the transducer face
        centre), whose physical position is (*Reference Pixel Physical Value X/Y*).
    spatial_format, data_type : int
        *Region Spatial Format* (1 = 2D) and *Region Data Type* (1 = tissue).
    """

    x0: int
    y0: int
    x1: int
    y1: int
    delta_x_mm: float | None
    delta_y_mm: float | None
    reference_x: float
    reference_y: float
    spatial_format: int
    data_type: int

    @property
    def is_calibrated_2d(self) -> bool:
        """True for a 2D tissue region with a spatial calibration in both directions."""
        return (
            self.spatial_format == 1
            and self.delta_x_mm is not None
            and self.delta_y_mm is not None
            and self.delta_x_mm > 0
            and self.delta_y_mm > 0
        )

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) covered by the region."""
        return (self.y1 - self.y0 + 1, self.x1 - self.x0 + 1)

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Boolean (rows, cols) mask of the region within an image of ``shape``."""
        out = np.zeros(shape, dtype=bool)
        out[max(self.y0, 0) : self.y1 + 1, max(self.x0, 0) : self.x1 + 1] = True
        return out

    def to_dict(self) -> dict:
        """JSON-ready description."""
        return {
            "x0": self.x0,
            "y0": self.y0,
            "x1": self.x1,
            "y1": self.y1,
            "delta_x_mm": self.delta_x_mm,
            "delta_y_mm": self.delta_y_mm,
            "reference_px_xy": [self.reference_x, self.reference_y],
            "spatial_format": self.spatial_format,
            "data_type": self.data_type,
        }


@dataclass(frozen=True)
class XRayGeometry:
    """What a projection X-ray file says about its geometry; any field may be missing.

    Parameters
    ----------
    sid_mm : float or None
        (0018,1110) *Distance Source to Detector*.
    sod_mm : float or None
        (0018,1111) *Distance Source to Patient* (to the isocentre for a C-arm).
    imager_pixel_spacing_mm : tuple of float or None
        (0018,1164) *Imager Pixel Spacing*, (row, column) at the detector plane.
    magnification_factor : float or None
        (0018,1114) *Estimated Radiographic Magnification Factor*.
    primary_angle_deg, secondary_angle_deg : float or None
        (0018,1510) / (0018,1511) *Positioner Primary/Secondary Angle*.
    collimator : CollimatorShape
        Shape of the collimator that bounds the exposed field.
    calibrated_isocenter_spacing_mm : tuple of float or None
        (0028,0030) *Pixel Spacing* with *Pixel Spacing Calibration Type* GEOMETRY: the
        unit's own spacing at the isocentre, used when ImagerPixelSpacing/magnification
        cannot give it.
    """

    sid_mm: float | None = None
    sod_mm: float | None = None
    imager_pixel_spacing_mm: tuple[float, float] | None = None
    magnification_factor: float | None = None
    primary_angle_deg: float | None = None
    secondary_angle_deg: float | None = None
    collimator: CollimatorShape = CollimatorShape.NONE
    calibrated_isocenter_spacing_mm: tuple[float, float] | None = None

    @property
    def magnification(self) -> float | None:
        """SID/SOD when both are known, else the estimated factor, else None."""
        if self.sid_mm and self.sod_mm and self.sod_mm < self.sid_mm:
            return self.sid_mm / self.sod_mm
        return self.magnification_factor

    @property
    def isocenter_spacing_mm(self) -> tuple[float, float] | None:
        """Imager pixel spacing divided by the magnification (row, column), mm.

        Without them, the PixelSpacing the unit calibrated by geometry (isocentre).
        """
        mag = self.magnification
        if self.imager_pixel_spacing_mm is None or not mag:
            return self.calibrated_isocenter_spacing_mm
        dy, dx = self.imager_pixel_spacing_mm
        return (dy / mag, dx / mag)

    def missing_for_cone_beam(self) -> list[str]:
        """Names of the DICOM attributes a cone-beam model needs and this file lacks."""
        missing = []
        if not self.sid_mm:
            missing.append("DistanceSourceToDetector (0018,1110)")
        if not self.sod_mm:
            missing.append("DistanceSourceToPatient (0018,1111)")
        if self.imager_pixel_spacing_mm is None:
            missing.append("ImagerPixelSpacing (0018,1164)")
        return missing

    def cone_beam(
        self, detector_shape: tuple[int, int], world_to_carm: np.ndarray | None = None
    ) -> ConeBeamGeometry:
        """The cone-beam model of this acquisition, or :class:`InputError` if incomplete."""
        missing = self.missing_for_cone_beam()
        if missing:
            raise InputError("cone-beam geometry incomplete: missing " + ", ".join(missing))
        return ConeBeamGeometry(
            sid_mm=float(self.sid_mm),
            sod_mm=float(self.sod_mm),
            detector_spacing_mm=self.imager_pixel_spacing_mm,
            detector_shape=detector_shape,
            world_to_carm=np.eye(3) if world_to_carm is None else world_to_carm,
        )

    def to_dict(self) -> dict:
        """JSON-ready description."""
        return {
            "sid_mm": self.sid_mm,
            "sod_mm": self.sod_mm,
            "imager_pixel_spacing_mm_row_col": (
                list(self.imager_pixel_spacing_mm) if self.imager_pixel_spacing_mm else None
            ),
            "magnification_factor": self.magnification_factor,
            "magnification_used": self.magnification,
            "isocenter_spacing_mm_row_col": (
                list(self.isocenter_spacing_mm) if self.isocenter_spacing_mm else None
            ),
            "primary_angle_deg": self.primary_angle_deg,
            "secondary_angle_deg": self.secondary_angle_deg,
            "collimator": self.collimator.value,
        }


@dataclass(frozen=True)
class Image:
    """Pixels of one image or cine with the geometry and times needed to fuse it.

    Parameters
    ----------
    array : ndarray
        Pixels as ``(frames, rows, cols)`` for greyscale or ``(frames, rows, cols, 3)``
        for RGB. Greyscale is always in MONOCHROME2 sense (higher = brighter):
        MONOCHROME1 files are inverted on reading (see :attr:`inverted`). Ultrasound
        read from DICOM holds the scanner's display, uint8 0-255, for every encoding
        (:mod:`fusion.display`); X-ray keeps its stored values.
    modality : Modality
    pixel_spacing_mm : tuple of float or None
        Physical pixel size (row, column) in mm, in the plane :attr:`spacing_plane`.
        None when the file gives none and none was supplied.
    spacing_source : str
        Where :attr:`pixel_spacing_mm` came from (DICOM attribute names and tags).
    spacing_plane : SpacingPlane
    pixel_aspect_ratio : tuple of float or None
        (0028,0034) *Pixel Aspect Ratio* (vertical, horizontal size of a pixel), as the
        file states it; what shape a pixel has when the file gives no spacing.
    frame_times_s : ndarray, shape (frames,)
        Acquisition time of each frame in seconds after :attr:`acquisition_datetime`
        (the first frame is at 0 unless the file says otherwise).
    frame_times_source : str
    acquisition_datetime : datetime or None
        Start of the acquisition (date and time of frame 0), naive local time as DICOM
        stores it.
    mask : ndarray of bool, shape (rows, cols), or None
        Pixels that carry image content: the tissue imaged inside the calibrated
        ultrasound region (:attr:`imaged_area`), or the exposed field inside the X-ray
        collimator.
    mask_source : str
    us_regions : tuple of UltrasoundRegion
        Every ultrasound region in the file; :attr:`us_region_index` says which one set
        the calibration and mask.
    us_region_index : int or None
    imaged_area : ImagedArea or None
        The tissue actually imaged inside the chosen ultrasound region (a sector, a
        rectangle or a convex outline found from the pixels); its mask is :attr:`mask`.
    xray : XRayGeometry or None
    photometric : str
        *Photometric Interpretation* (0028,0004) as stored in the file.
    inverted : bool
        True when MONOCHROME1 pixels were inverted to MONOCHROME2 sense.
    source_path : str or None
    uids : dict
        DICOM identifiers: ``study``, ``series``, ``sop_instance``, ``sop_class``,
        ``frame_of_reference`` (missing keys absent).
    notes : tuple of str
        What was in the file but could not be used, and why.
    pixels_decoded : bool
        False for a header-only read: :attr:`array` then has the declared shape and
        dtype but is a zero-filled, read-only view that takes no memory.
    """

    array: np.ndarray
    modality: Modality
    pixel_spacing_mm: tuple[float, float] | None = None
    spacing_source: str = "none"
    spacing_plane: SpacingPlane = SpacingPlane.UNSPECIFIED
    pixel_aspect_ratio: tuple[float, float] | None = None
    frame_times_s: np.ndarray | None = None
    frame_times_source: str = "single frame"
    acquisition_datetime: _dt.datetime | None = None
    mask: np.ndarray | None = None
    mask_source: str = "none"
    us_regions: tuple[UltrasoundRegion, ...] = ()
    us_region_index: int | None = None
    imaged_area: ImagedArea | None = None
    xray: XRayGeometry | None = None
    photometric: str = "MONOCHROME2"
    inverted: bool = False
    source_path: str | None = None
    uids: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    pixels_decoded: bool = True

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[3] != 3):
            raise InputError(
                "Image.array must be (frames, rows, cols) or (frames, rows, cols, 3); "
                f"got shape {arr.shape}"
            )
        if min(arr.shape[:3]) < 1:
            raise InputError(f"Image.array has an empty axis: shape {arr.shape}")
        object.__setattr__(self, "array", arr)
        object.__setattr__(self, "modality", Modality(self.modality))
        if self.pixel_spacing_mm is not None:
            dy, dx = (float(s) for s in self.pixel_spacing_mm)
            if not (np.isfinite(dy) and np.isfinite(dx) and dy > 0 and dx > 0):
                raise InputError(f"pixel_spacing_mm must be finite and > 0, got {(dy, dx)}")
            object.__setattr__(self, "pixel_spacing_mm", (dy, dx))
        times = (
            np.zeros(arr.shape[0])
            if self.frame_times_s is None
            else np.asarray(self.frame_times_s, dtype=float)
        )
        if times.shape != (arr.shape[0],):
            raise InputError(
                f"frame_times_s has shape {times.shape}; expected ({arr.shape[0]},), one "
                "time per frame"
            )
        object.__setattr__(self, "frame_times_s", times)
        if self.mask is not None:
            mask = np.asarray(self.mask, dtype=bool)
            if mask.shape != arr.shape[1:3]:
                raise InputError(f"mask shape {mask.shape} != image (rows, cols) {arr.shape[1:3]}")
            object.__setattr__(self, "mask", mask)

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.array.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of one frame."""
        return (int(self.array.shape[1]), int(self.array.shape[2]))

    @property
    def is_color(self) -> bool:
        """True for RGB pixels."""
        return self.array.ndim == 4

    @property
    def us_region(self) -> UltrasoundRegion | None:
        """The ultrasound region that set the calibration, if any."""
        if self.us_region_index is None:
            return None
        return self.us_regions[self.us_region_index]

    def frame(self, index: int) -> np.ndarray:
        """Pixels of one frame, as stored after photometric normalisation."""
        if not -self.n_frames <= index < self.n_frames:
            raise InputError(
                f"frame index {index} out of range: {self.source_path or 'image'} has "
                f"{self.n_frames} frame(s) (0-based)"
            )
        return self.array[index]

    def gray(self, index: int = 0) -> np.ndarray:
        """One frame as float32 luminance (ITU-R BT.601 weights for RGB)."""
        pixels = self.frame(index).astype(np.float32)
        if self.is_color:
            pixels = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return pixels

    def require_spacing(self, flag: str = "--fixed-spacing-mm") -> tuple[float, float]:
        """Pixel spacing, or :class:`MissingCalibrationError` naming the flag to give it."""
        if self.pixel_spacing_mm is None:
            raise MissingCalibrationError(
                f"{self.source_path or 'image'}: no physical pixel spacing "
                f"({self.spacing_source}); give it by hand with {flag} ROW_MM,COL_MM"
            )
        return self.pixel_spacing_mm

    def require_min_size(self, min_px: int = MIN_FLUORO_SIZE_PX, role: str = "fluoroscopy"):
        """Raise :class:`InputError` when a frame is smaller than ``min_px`` on a side.

        For images used as the fixed (fluoroscopy) side of a registration; info and
        reading accept any size, so small vendor thumbnails still describe.
        """
        rows, cols = self.shape
        if min(rows, cols) < min_px:
            raise InputError(
                f"{self.source_path or 'image'}: {rows} x {cols} pixels is too small for "
                f"the {role}: at least {min_px} x {min_px} are needed"
            )
        return self

    def to_sitk(self, index: int = 0):
        """One frame as a 2D SimpleITK image with spacing (x, y) = (col, row) in mm.

        SimpleITK orders spacing as (x, y); this transposes the (row, col) convention
        explicitly. The origin is the centre of pixel (0, 0) at (0, 0) mm.
        """
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(self.gray(index))
        if self.pixel_spacing_mm is not None:
            dy, dx = self.pixel_spacing_mm
            img.SetSpacing((dx, dy))
        return img

    @classmethod
    def from_sitk(cls, img, modality: Modality | str = Modality.OT, **kwargs) -> Image:
        """Build a single-frame Image from a 2D SimpleITK image (spacing (x, y) → (row, col))."""
        import SimpleITK as sitk

        if img.GetDimension() != 2:
            raise InputError(f"from_sitk expects a 2D image, got {img.GetDimension()}D")
        arr = sitk.GetArrayFromImage(img)
        if arr.ndim == 3:  # vector pixels
            arr = arr[..., :3] if arr.shape[2] >= 3 else arr[..., 0]
        sx, sy = img.GetSpacing()
        kwargs.setdefault("pixel_spacing_mm", (sy, sx))
        kwargs.setdefault("spacing_source", "SimpleITK image spacing")
        return cls(array=arr[None, ...], modality=modality, **kwargs)

    def describe(self) -> dict:
        """JSON-ready summary of what was understood (used by ``hybridfuse info``)."""
        return {
            "modality": self.modality.value,
            "frames": self.n_frames,
            "rows": self.shape[0],
            "cols": self.shape[1],
            "color": self.is_color,
            "dtype": str(self.array.dtype),
            "pixels_decoded": self.pixels_decoded,
            "photometric_interpretation": self.photometric,
            "inverted_from_monochrome1": self.inverted,
            "pixel_spacing_mm_row_col": (
                list(self.pixel_spacing_mm) if self.pixel_spacing_mm else None
            ),
            "spacing_source": self.spacing_source,
            "spacing_plane": self.spacing_plane.value,
            "pixel_aspect_ratio": (
                list(self.pixel_aspect_ratio) if self.pixel_aspect_ratio else None
            ),
            "acquisition_datetime": (
                self.acquisition_datetime.isoformat() if self.acquisition_datetime else None
            ),
            "frame_times_s": {
                "source": self.frame_times_source,
                "first": float(self.frame_times_s[0]),
                "last": float(self.frame_times_s[-1]),
                "n": self.n_frames,
            },
            "mask": {
                "source": self.mask_source,
                "fraction_of_pixels": (
                    None if self.mask is None else round(float(self.mask.mean()), 4)
                ),
            },
            "ultrasound_regions": [r.to_dict() for r in self.us_regions],
            "ultrasound_region_used": self.us_region_index,
            "imaged_area": (
                None
                if self.imaged_area is None
                else self.imaged_area.to_dict(self.pixel_spacing_mm)
            ),
            "xray_geometry": None if self.xray is None else self.xray.to_dict(),
            "notes": list(self.notes),
        }
