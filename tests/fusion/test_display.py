"""Display pipeline: every encoding becomes the 0-255 image the scanner shows.

Generated variants of each encoding (built here with pydicom) are read through
``read_image`` as ultrasound and compared with the display they must give; the real
vendor files are compared with pydicom's own rendering of the same file.
"""

from __future__ import annotations

import functools
import io

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from hybridfuse.fusion import display
from hybridfuse.fusion.errors import CorruptFileError
from hybridfuse.fusion.io import read_image
from tests.conftest import REALDATA, realdata_rows

US_SOP = "1.2.840.10008.5.1.4.1.1.6.1"


def _us(pixels: np.ndarray, photometric: str, bits: int = 8, signed: bool = False, **attrs):
    """A minimal single-frame ultrasound data set holding ``pixels`` natively."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = US_SOP
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = US_SOP
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def _read(ds, tmp_path, name="x.dcm") -> np.ndarray:
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return read_image(path).array[0]


def _ramp(rows=16, cols=24) -> np.ndarray:
    return (np.arange(rows * cols).reshape(rows, cols) % 256).astype(np.uint8)


def _palette(ds, lut_rgb: np.ndarray, entry_bits: int, scale: int = 1) -> None:
    """Red/Green/Blue LUTs of 256 entries, each in a 16-bit word (PS3.3 C.7.6.3.1.6)."""
    for channel, name in enumerate(("Red", "Green", "Blue")):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [256, 0, entry_bits])
        data = (lut_rgb[:, channel].astype(np.uint32) * scale).astype("<u2").tobytes()
        setattr(ds, f"{name}PaletteColorLookupTableData", data)


#: A LUT whose three channels differ, so that a swapped or shared channel shows.
LUT = np.stack([np.arange(256), 255 - np.arange(256), np.full(256, 7)], axis=1).astype(np.uint8)


@pytest.mark.parametrize(
    ("entry_bits", "scale"),
    [(8, 1), (16, 257), (16, 256), (16, 1)],
    ids=["8-bit", "16-bit full range", "16-bit 0-65280 (CX50)", "16-bit holding 0-255"],
)
def test_palette_colour_shows_the_lut_colours_in_8_bits(tmp_path, entry_bits, scale):
    index = _ramp()
    ds = _us(index, "PALETTE COLOR")
    _palette(ds, LUT, entry_bits, scale)
    out = _read(ds, tmp_path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, LUT[index])


def test_rgb_is_kept(tmp_path, rng):
    rgb = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_read(_us(rgb, "RGB"), tmp_path), rgb)


def _ybr_full(rgb: np.ndarray) -> np.ndarray:
    """RGB to YBR_FULL as PS3.3 C.7.6.3.1.2 defines it."""
    r, g, b = (rgb[..., k].astype(float) for k in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.1687 * r - 0.3313 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.4187 * g - 0.0813 * b + 128
    return np.clip(np.rint(np.stack([y, cb, cr], axis=-1)), 0, 255).astype(np.uint8)


def test_ybr_full_is_converted_to_rgb(tmp_path, rng):
    rgb = rng.integers(20, 236, (16, 24, 3), dtype=np.uint8)
    out = _read(_us(_ybr_full(rgb), "YBR_FULL"), tmp_path)
    assert np.abs(out.astype(int) - rgb).max() <= 2


def test_ybr_full_422_is_converted_to_rgb(tmp_path, rng):
    # Pairs of equal pixels along x, so that sharing Cb/Cr loses nothing.
    rgb = np.repeat(rng.integers(20, 236, (16, 12, 3), dtype=np.uint8), 2, axis=1)
    ybr = _ybr_full(rgb)
    # YBR_FULL_422 stores Y1 Y2 Cb Cr for each pair of pixels (PS3.5 8.2.3).
    packed = np.stack([ybr[:, 0::2, 0], ybr[:, 1::2, 0], ybr[:, 0::2, 1], ybr[:, 0::2, 2]], -1)
    ds = _us(rgb, "YBR_FULL_422")
    ds.PixelData = packed.tobytes()
    out = _read(ds, tmp_path)
    assert np.abs(out.astype(int) - rgb).max() <= 2


def test_rle_is_decoded(tmp_path, rng):
    rgb = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    ds = _us(rgb, "RGB")
    ds.compress(RLELossless, encoding_plugin="pydicom")
    np.testing.assert_array_equal(_read(ds, tmp_path), rgb)


def _encapsulated_jpeg(pixels: np.ndarray, photometric: str) -> Dataset:
    from PIL import Image as PILImage
    from pydicom.encaps import encapsulate

    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, format="JPEG", quality=95, subsampling=1)
    ds = _us(pixels, photometric)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    return ds


def test_jpeg_baseline_grey_and_colour_are_decoded(tmp_path):
    yy, xx = np.mgrid[0:32, 0:48]
    grey = (xx * 4 + yy * 2).astype(np.uint8)  # a smooth ramp, 0-250: JPEG keeps it
    out = _read(_encapsulated_jpeg(grey, "MONOCHROME2"), tmp_path, "g.dcm")
    assert np.abs(out.astype(int) - grey).max() <= 4
    rgb = np.stack([grey, 255 - grey, np.full_like(grey, 90)], axis=-1)
    out = _read(_encapsulated_jpeg(rgb, "YBR_FULL_422"), tmp_path, "c.dcm")
    assert np.abs(out.astype(int) - rgb).mean() <= 3


def test_jpeg_2000_lossless_is_decoded(tmp_path, rng):
    from PIL import Image as PILImage
    from PIL import features
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    if not features.check("jpg_2000"):
        pytest.skip("Pillow is built without OpenJPEG: no JPEG 2000 encoder to build the file")
    grey = rng.integers(0, 256, (16, 24), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(grey).save(buf, format="JPEG2000", irreversible=False, no_jp2=True)
    ds = _us(grey, "MONOCHROME2")
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    np.testing.assert_array_equal(_read(ds, tmp_path), grey)


def test_jpeg_ls_is_decoded(tmp_path, rng):
    from pydicom.pixels import get_encoder

    encoder = get_encoder(JPEGLSLossless)
    if not encoder.is_available:
        pytest.skip("no JPEG-LS encoder installed (pyjpegls) to build the test file")
    grey = rng.integers(0, 256, (16, 24), dtype=np.uint8)
    ds = _us(grey, "MONOCHROME2")
    ds.compress(JPEGLSLossless)
    np.testing.assert_array_equal(_read(ds, tmp_path), grey)


def test_monochrome1_is_inverted(tmp_path):
    grey = _ramp()
    out = _read(_us(grey, "MONOCHROME1"), tmp_path)
    np.testing.assert_array_equal(out, 255 - grey)


def test_signed_16_bit_without_window_spans_0_255(tmp_path):
    values = np.linspace(-1000, 3000, 16 * 24).reshape(16, 24).astype(np.int16)
    out = _read(_us(values, "MONOCHROME2", bits=16, signed=True), tmp_path)
    expected = np.rint((values.astype(float) + 1000) * 255 / 4000)
    np.testing.assert_array_equal(out, expected)


def test_window_centre_width_after_rescale(tmp_path):
    stored = np.array([[0, 50, 100, 150, 200, 250]], dtype=np.uint16)
    # Modality values 2 * stored - 100 = -100, 0, 100, 200, 300, 400; window 100/201:
    # PS3.3 C.11.2.1.2.1 maps x <= -0.5 to 0, x > 199.5 to 255, linearly between.
    ds = _us(
        stored,
        "MONOCHROME2",
        bits=12,
        RescaleSlope=2,
        RescaleIntercept=-100,
        WindowCenter=100,
        WindowWidth=201,
    )
    out = _read(ds, tmp_path)
    np.testing.assert_array_equal(out, [[0, 1, 128, 255, 255, 255]])


def test_voi_lut_sequence_wins_over_the_window(tmp_path):
    stored = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4, 0, 16]
    item.add_new("LUTData", "US", [65535, 0, 65535, 0])
    ds = _us(stored, "MONOCHROME2", bits=12, WindowCenter=1, WindowWidth=2)
    ds.VOILUTSequence = [item]
    np.testing.assert_array_equal(_read(ds, tmp_path), [[255, 0, 255, 0]])


def test_broken_palette_is_one_line_error(tmp_path):
    ds = _us(_ramp(), "PALETTE COLOR")
    for name in ("Red", "Green", "Blue"):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{name}PaletteColorLookupTableData", b"\x00\x00" * 3)
    with pytest.raises(CorruptFileError, match=r"x\.dcm: .*(palette|lookup)"):
        _read(ds, tmp_path)


# --- the real vendor files against pydicom's own rendering -------------------------------


def _pydicom_rendering(ds, frame: int = 0) -> np.ndarray:
    """Pydicom's LUTs applied to one decoded frame, as luminance (any linear scale)."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    arr = ds.pixel_array
    arr = arr[frame] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr
    photometric = ds.PhotometricInterpretation
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    elif photometric.startswith("MONOCHROME"):
        arr = apply_voi_lut(apply_modality_lut(arr, ds), ds)
    arr = arr.astype(float)
    if arr.ndim == 3:
        arr = arr @ np.array([0.299, 0.587, 0.114])
    if photometric == "MONOCHROME1":
        arr = arr.max() - arr
    return arr


@functools.cache
def real_file(name: str):
    """(read_image result, pydicom data set) of a real file, read once per session."""
    import pydicom

    path = REALDATA / "images" / name
    return read_image(path), pydicom.dcmread(path)


@functools.cache
def real_rendering(name: str, frame: int = 0) -> np.ndarray:
    """Pydicom's rendering of one frame of a real file, computed once per session."""
    return _pydicom_rendering(real_file(name)[1], frame)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("row", realdata_rows("images"))
def test_real_file_display_matches_pydicoms_rendering(row):
    image, ds = real_file(row["filename"])
    reference = real_rendering(row["filename"])
    if image.modality.value == "US":
        ours = image.gray(0)
        inside = image.mask
        assert image.array.dtype == np.uint8
    else:
        # X-ray frames keep their stored values for registration; their display is
        # what fusion.display gives from pydicom's decoded frame.
        frame = ds.pixel_array
        plan = display.plan_display(
            ds, ds.PhotometricInterpretation, display.stored_range([frame], ds)
        )
        ours = display.to_display(frame, ds, plan).astype(float)
        inside = np.ones(ours.shape, bool)
    assert ours.min() >= 0 and ours.max() <= 255
    assert _correlation(ours[inside], reference[inside]) >= 0.99


def test_a_linear_window_of_width_1_is_a_threshold(tmp_path):
    stored = np.array([[0, 99, 100, 101, 200]], dtype=np.uint16)
    ds = _us(stored, "MONOCHROME2", bits=12, WindowCenter=100, WindowWidth=1)
    out = _read(ds, tmp_path)  # x <= c - 0.5 -> 0, else 255 (PS3.3 C.11.2.1.2.1)
    np.testing.assert_array_equal(out, [[0, 0, 255, 255, 255]])
