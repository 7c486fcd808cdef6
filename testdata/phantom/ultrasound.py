"""B-mode ultrasound of a plane through the phantom, shown on a scanner-like screen.

The probe is a linear array: scan lines run along the plane's axial direction. The
image forms as in a real scanner: tissue scatterers (tissue-fixed complex Gaussian
noise, scaled by echogenicity) plus coherent specular reflectors (bone surfaces, the
needle, beads and their reverberations) are convolved with an anisotropic point-spread
function; the envelope is attenuated with depth, log-compressed and drawn into the
calibrated region of a screen with borders and a burned-in text banner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridfuse.registration.geometry import ImagePlane

from .anatomy import Phantom, Tissue


@dataclass(frozen=True)
class ScreenLayout:
    """Scanner screen: ``rows × cols`` pixels with a calibrated rectangle inside."""

    rows: int = 480
    cols: int = 640
    x0: int = 160
    y0: int = 56
    width: int = 320
    height: int = 400
    spacing_mm: float = 0.15

    @property
    def x1(self) -> int:
        """Last column of the calibrated region (inclusive)."""
        return self.x0 + self.width - 1

    @property
    def y1(self) -> int:
        """Last row of the calibrated region (inclusive)."""
        return self.y0 + self.height - 1

    @property
    def reference_px(self) -> tuple[float, float]:
        """Absolute pixel (x, y) of the transducer-face centre (physical position 0, 0)."""
        return (self.x0 + (self.width - 1) / 2.0, float(self.y0))

    def region_pixels(self) -> np.ndarray:
        """(height*width, 2) pixel centres (x, y) of the calibrated region, row-major."""
        yy, xx = np.mgrid[self.y0 : self.y1 + 1, self.x0 : self.x1 + 1]
        return np.column_stack([xx.ravel(), yy.ravel()]).astype(float)

    def corners(self) -> np.ndarray:
        """The region's four corner pixels (x, y)."""
        return np.array(
            [[self.x0, self.y0], [self.x1, self.y0], [self.x1, self.y1], [self.x0, self.y1]],
            dtype=float,
        )


@dataclass(frozen=True)
class ProbePlane:
    """The anatomical plane the probe scans: transducer centre at t=0 and its axes."""

    origin_mm: np.ndarray
    lateral: np.ndarray  # along the array (increasing image x)
    axial: np.ndarray  # into the body (increasing image y)

    def to_world(self, lat_ax: np.ndarray) -> np.ndarray:
        """World points (N, 3) of in-plane coordinates (N, 2) = (lateral, axial) mm."""
        lat_ax = np.atleast_2d(lat_ax)
        return self.origin_mm + lat_ax[:, :1] * self.lateral + lat_ax[:, 1:2] * self.axial

    def from_world(self, pts: np.ndarray) -> np.ndarray:
        """In-plane (lateral, axial) mm of world points (N, 3)."""
        rel = np.atleast_2d(pts) - self.origin_mm
        return np.column_stack([rel @ self.lateral, rel @ self.axial])


@dataclass(frozen=True)
class ProbePose:
    """In-plane pose of the probe relative to its t=0 position (the plane stays put)."""

    shift_lateral_mm: float = 0.0
    shift_axial_mm: float = 0.0
    rotation_deg: float = 0.0

    def to_dict(self) -> dict:
        """JSON-ready values."""
        return {
            "shift_lateral_mm": self.shift_lateral_mm,
            "shift_axial_mm": self.shift_axial_mm,
            "rotation_deg": self.rotation_deg,
        }


def image_plane(layout: ScreenLayout, plane: ProbePlane, pose: ProbePose) -> ImagePlane:
    """Where each screen pixel lies in the world for this probe pose."""
    c, s = np.cos(np.radians(pose.rotation_deg)), np.sin(np.radians(pose.rotation_deg))
    axis_x = c * plane.lateral + s * plane.axial
    axis_y = -s * plane.lateral + c * plane.axial
    ref_x, ref_y = layout.reference_px
    d = layout.spacing_mm
    transducer = plane.to_world(np.array([[pose.shift_lateral_mm, pose.shift_axial_mm]]))[0]
    origin = transducer - ref_x * d * axis_x - ref_y * d * axis_y
    return ImagePlane(origin, axis_x, axis_y, (d, d))


@dataclass(frozen=True)
class Sector:
    """A curvilinear probe's image: scan lines fanning out from a virtual apex.

    The transducer face is an arc of ``radius_mm`` about the apex; lines span
    ±``half_angle_deg`` and reach ``depth_mm`` below the face. The sector's bounding
    box is the calibrated region, whose top-centre pixel is the layout's reference.
    """

    radius_mm: float
    half_angle_deg: float
    depth_mm: float

    def box_mm(self) -> tuple[float, float]:
        """Width and height (mm) of the sector's bounding box."""
        far = self.radius_mm + self.depth_mm
        a = np.radians(self.half_angle_deg)
        return 2 * far * np.sin(a), far - self.radius_mm * np.cos(a)

    def apex_px(self, layout: ScreenLayout) -> tuple[float, float]:
        """Pixel (x, y) of the apex, above the region's top edge."""
        ref_x, ref_y = layout.reference_px
        a = np.radians(self.half_angle_deg)
        return ref_x, ref_y - self.radius_mm * np.cos(a) / layout.spacing_mm

    def contains(self, layout: ScreenLayout, xy: np.ndarray) -> np.ndarray:
        """Whether screen pixels (N, 2) lie inside the sector."""
        rel = np.atleast_2d(xy) - np.array(self.apex_px(layout))
        r = np.hypot(rel[:, 0], rel[:, 1]) * layout.spacing_mm
        t = np.degrees(np.arctan2(rel[:, 0], rel[:, 1]))
        far = self.radius_mm + self.depth_mm
        return (r >= self.radius_mm) & (r <= far) & (np.abs(t) <= self.half_angle_deg)


@dataclass(frozen=True)
class BModeSettings:
    """Acoustic and display settings (stated in the truth file)."""

    frequency_mhz: float = 7.5
    psf_sigma_axial_mm: float = 0.22
    psf_sigma_lateral_mm: float = 0.45
    residual_attenuation_per_mm: float = 0.006  # after time-gain compensation
    dynamic_range_db: float = 50.0
    reference_amplitude: float = 9.0
    speckle_decorrelation: float = 0.25  # per-frame fraction of fresh scatterers


_ECHO = {"skin": 2.5, "fat": 0.18, "muscle": 0.80}


def _segment_distance(pts: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((pts - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(pts - (a + t[:, None] * ab), axis=1)


def _gaussian_psf_fft(shape: tuple[int, int], sigma_rows: float, sigma_cols: float) -> np.ndarray:
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    return np.exp(-2.0 * np.pi**2 * ((fy * sigma_rows) ** 2 + (fx * sigma_cols) ** 2))


class BModeRenderer:
    """Renders frames of one probe plane; scatterers are fixed in the tissue."""

    def __init__(
        self,
        layout: ScreenLayout,
        plane: ProbePlane,
        phantom: Phantom,
        settings: BModeSettings,
        rng: np.random.Generator,
        *,
        scatter_extent_mm: tuple[float, float, float, float] = (-45.0, 45.0, -10.0, 80.0),
    ):
        self.layout = layout
        self.plane = plane
        self.phantom = phantom
        self.settings = settings
        # Tissue-fixed scatterer field on a 0.1 mm grid of in-plane coordinates
        # (lateral from, lateral to, axial from, axial to; mm from the transducer).
        self._grid_mm = 0.1
        self._lat0, self._ax0 = scatter_extent_mm[0], scatter_extent_mm[2]
        n_lat = int(round((scatter_extent_mm[1] - scatter_extent_mm[0]) / self._grid_mm))
        n_ax = int(round((scatter_extent_mm[3] - scatter_extent_mm[2]) / self._grid_mm))
        self._scatter = (
            rng.standard_normal((n_ax, n_lat)) + 1j * rng.standard_normal((n_ax, n_lat))
        ) / np.sqrt(2.0)
        self._psf = _gaussian_psf_fft(
            (layout.height, layout.width),
            settings.psf_sigma_axial_mm / layout.spacing_mm,
            settings.psf_sigma_lateral_mm / layout.spacing_mm,
        )

    def _scatterers(self, lat_ax: np.ndarray) -> np.ndarray:
        i = np.clip(
            np.rint((lat_ax[:, 1] - self._ax0) / self._grid_mm).astype(int),
            0,
            self._scatter.shape[0] - 1,
        )
        j = np.clip(
            np.rint((lat_ax[:, 0] - self._lat0) / self._grid_mm).astype(int),
            0,
            self._scatter.shape[1] - 1,
        )
        return self._scatter[i, j]

    def render_region(
        self, pose: ProbePose, tip_mm: np.ndarray | None, rng: np.random.Generator
    ) -> np.ndarray:
        """B-mode of the calibrated region, float amplitude envelope (height, width)."""
        lay = self.layout
        plane = image_plane(lay, self.plane, pose)
        pts = plane.pixel_to_world(lay.region_pixels())
        shape = (lay.height, lay.width)
        return self._render_points(pts, shape, plane.axis_y, None, tip_mm, rng, self._psf)

    def render_sector(
        self, sector: Sector, tip_mm: np.ndarray | None, rng: np.random.Generator
    ) -> np.ndarray:
        """B-mode of a curvilinear probe's sector, scan-converted into the region.

        Scan lines fan out from the sector's apex: the echoes are formed along them on
        a (depth, angle) grid and then resampled onto the screen's pixels, as a scanner's
        scan converter does; pixels outside the sector are 0.
        """
        from scipy import ndimage

        lay = self.layout
        st = self.settings
        plane = image_plane(lay, self.plane, ProbePose())
        apex_px = np.array(sector.apex_px(lay))
        n_r = int(round(sector.depth_mm / lay.spacing_mm))
        mid_mm = sector.radius_mm + sector.depth_mm / 2.0
        n_t = int(np.ceil(2 * np.radians(sector.half_angle_deg) * mid_mm / lay.spacing_mm))
        radii = sector.radius_mm + lay.spacing_mm * np.arange(n_r)
        angles = np.linspace(-sector.half_angle_deg, sector.half_angle_deg, n_t)
        rr, tt = np.meshgrid(radii, np.radians(angles), indexing="ij")
        xy = apex_px + np.column_stack([np.sin(tt).ravel(), np.cos(tt).ravel()]) * (
            rr.ravel()[:, None] / lay.spacing_mm
        )
        pts = plane.pixel_to_world(xy)
        psf = _gaussian_psf_fft(
            (n_r, n_t),
            st.psf_sigma_axial_mm / lay.spacing_mm,
            st.psf_sigma_lateral_mm / (mid_mm * np.radians(angles[1] - angles[0])),
        )
        apex_mm = plane.pixel_to_world(apex_px[None])[0]
        beams = pts - apex_mm
        beams /= np.linalg.norm(beams, axis=1, keepdims=True)
        polar = self._render_points(pts, (n_r, n_t), beams, apex_mm, tip_mm, rng, psf)
        pix = lay.region_pixels() - apex_px
        r_px = np.hypot(pix[:, 0], pix[:, 1]) * lay.spacing_mm
        t_deg = np.degrees(np.arctan2(pix[:, 0], pix[:, 1]))
        rows = (r_px - sector.radius_mm) / lay.spacing_mm
        cols = (t_deg - angles[0]) / (angles[1] - angles[0])
        inside = (rows >= 0) & (rows <= n_r - 1) & (cols >= 0) & (cols <= n_t - 1)
        out = ndimage.map_coordinates(polar, [rows, cols], order=1, mode="nearest")
        return np.where(inside, out, 0.0).reshape(lay.height, lay.width)

    def _render_points(self, pts, shape, beam, apex_mm, tip_mm, rng, psf) -> np.ndarray:
        """Envelope on a grid of world points whose axis 0 runs along the scan lines.

        ``beam`` is the scan-line direction, one (3,) for parallel lines or one per
        point; ``apex_mm`` (None for parallel lines) is where fanned lines meet.
        """
        st = self.settings
        lat_ax = self.plane.from_world(pts)
        labels = self.phantom.tissue_labels(pts).reshape(shape)

        depth_below_skin = self.phantom.depth_below_skin(pts).reshape(shape)
        echo = np.where(
            depth_below_skin < 1.5,
            _ECHO["skin"],
            np.where(
                depth_below_skin < 1.5 + self.phantom.fat_thickness_mm,
                _ECHO["fat"],
                _ECHO["muscle"],
            ),
        )
        # Muscle fibre striations: bright bands ~2.5 mm apart, nearly along the array.
        fibres = 1.0 + 0.6 * np.sin(
            2 * np.pi * (lat_ax[:, 1] + 0.08 * lat_ax[:, 0]).reshape(shape) / 2.5
        )
        muscle = depth_below_skin >= 1.5 + self.phantom.fat_thickness_mm
        echo = np.where(muscle, echo * fibres, echo)
        echo[labels == Tissue.OUTSIDE] = 0.0
        bone = labels == Tissue.BONE
        echo[bone] = 0.0

        fresh = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2.0)
        speck = self._scatterers(lat_ax).reshape(shape)
        w = st.speckle_decorrelation
        field = np.sqrt(echo) * (np.sqrt(1 - w) * speck + np.sqrt(w) * fresh)

        # Bone: specular surface at the first bone sample of each scan line, shadow below.
        seen_bone = np.cumsum(bone, axis=0) > 0
        surface = bone & ~np.vstack([np.zeros((1, shape[1]), bool), seen_bone[:-1]])
        shadow = seen_bone & ~surface
        bone_reflect = 14.0 * surface.astype(float)
        # A thin bright line one PSF thick, with a weak coherent tail under it.
        bone_reflect[1:] += 5.0 * surface[:-1]
        reflect = np.zeros(shape)
        attenuation_mask = np.where(shadow, 0.03, 1.0)

        # Needle in plane: bright shaft and a short reverberation comet tail.
        if tip_mm is not None:
            hub = self.phantom.needle.hub_mm
            r = self.phantom.needle.radius_mm
            dist = _segment_distance(pts, hub, tip_mm).reshape(shape)
            reflect += 7.0 * np.exp(-((dist / (0.6 * r)) ** 2))
            for k in range(1, 4):
                d_k = _segment_distance(pts - k * 1.5 * beam, hub, tip_mm).reshape(shape)
                reflect += 7.0 * 0.3**k * np.exp(-((d_k / (0.6 * r)) ** 2))
        # Beads: bright near wall, reverberation tail, shadow beneath.
        for center, rb in zip(self.phantom.bead_centers_mm, self.phantom.bead_radii(), strict=True):
            axis_y = (
                beam if apex_mm is None else (center - apex_mm) / np.linalg.norm(center - apex_mm)
            )
            rel = pts - center
            along = rel @ axis_y
            radial = np.linalg.norm(rel - along[:, None] * axis_y, axis=1)
            dist = np.linalg.norm(rel, axis=1)
            near_wall = np.exp(-(((dist - rb) / 0.25) ** 2)) * (along < 0.3 * rb)
            reflect += (18.0 * near_wall).reshape(shape)
            for k in range(1, 7):
                d_k = np.linalg.norm(rel - k * 2.0 * rb * axis_y, axis=1)
                reflect += (18.0 * 0.55**k * np.exp(-((d_k / (0.6 * rb)) ** 2))).reshape(shape)
            under = (radial < rb) & (along > rb)
            attenuation_mask = attenuation_mask * np.where(under.reshape(shape), 0.35, 1.0)

        # Everything beneath a bone surface is in its acoustic shadow.
        field = (field + reflect * np.exp(1j * 0.3)) * attenuation_mask
        field = field + bone_reflect * np.exp(1j * 0.3)
        envelope = np.abs(np.fft.ifft2(np.fft.fft2(field) * psf))
        # Depth along the scan line, from the transducer face (grid row 0).
        depth = (np.arange(shape[0]) * self.layout.spacing_mm)[:, None]
        envelope *= np.exp(-2.0 * st.residual_attenuation_per_mm * depth)
        return envelope

    def compress(self, envelope: np.ndarray) -> np.ndarray:
        """Log compression to 8 bits over the stated dynamic range."""
        st = self.settings
        db = 20.0 * np.log10(np.maximum(envelope, 1e-6) / st.reference_amplitude)
        return np.rint(np.clip(db / st.dynamic_range_db + 1.0, 0.0, 1.0) * 255.0).astype(np.uint8)


def draw_screen(
    layout: ScreenLayout, region: np.ndarray, banner: list[str], *, marker_right: bool = False
) -> np.ndarray:
    """Compose the scanner screen: region image, border, depth ticks and burned-in text.

    ``marker_right`` draws the probe's orientation marker at the region's right end (an
    image mirrored by the probe marker), so the screen shows which way the array runs.
    """
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    screen = np.zeros((layout.rows, layout.cols), dtype=np.uint8)
    screen[layout.y0 : layout.y1 + 1, layout.x0 : layout.x1 + 1] = region
    pil = PILImage.fromarray(screen)
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default()
    for i, line in enumerate(banner):
        draw.text((12, 6 + 14 * i), line, fill=235, font=font)
    # Frame around the region, outside it so no calibrated pixel is touched.
    draw.rectangle(
        [layout.x0 - 3, layout.y0 - 3, layout.x1 + 3, layout.y1 + 3], outline=90, width=1
    )
    # Depth scale: a tick per cm to the right of the region.
    per_cm = 10.0 / layout.spacing_mm
    n_cm = int(layout.height / per_cm) + 1
    for k in range(n_cm):
        y = layout.y0 + k * per_cm
        if y <= layout.y1:
            draw.line([layout.x1 + 8, y, layout.x1 + 16, y], fill=200)
            draw.text((layout.x1 + 20, y - 6), f"{k}", fill=200, font=font)
    # Orientation marker on the probe's left end.
    if marker_right:
        draw.ellipse([layout.x1 + 6, layout.y0 - 14, layout.x1 + 14, layout.y0 - 6], fill=255)
    else:
        draw.ellipse([layout.x0 - 14, layout.y0 - 14, layout.x0 - 6, layout.y0 - 6], fill=255)
    return np.asarray(pil)
