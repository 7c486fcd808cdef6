"""Attacks on image reading found after issue #13's hardening, one test each.

Non-finite geometry, a data file referenced from an MHA/MHD/NRRD header, the 1 GiB
decode limit on plain images, and a compressed frame whose codestream declares a larger
image than the DICOM header.
"""

from __future__ import annotations

import io
import os
import struct
import warnings

import pydicom
import pytest
from PIL import Image as PILImage
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit

import hybridfuse.fusion.io as fio
from hybridfuse import _dicomread
from hybridfuse.fusion import CorruptFileError, InputError, read_image
from hybridfuse.testdata import sample_case


@pytest.fixture(scope="module")
def case():
    return sample_case()


def _fluoro(case):
    return sorted(case.glob("fluoro_*.dcm"))[0]


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("ImagerPixelSpacing", ["inf", "inf"]),
        ("ImagerPixelSpacing", ["nan", "nan"]),
        ("PixelSpacing", ["nan", "nan"]),
        ("DistanceSourceToDetector", "inf"),
        ("DistanceSourceToPatient", "nan"),
    ],
)
def test_nonfinite_xray_geometry_is_refused(case, tmp_path, keyword, value):
    ds = pydicom.dcmread(_fluoro(case))
    with warnings.catch_warnings():  # pydicom warns that DS 'inf' is invalid
        warnings.simplefilter("ignore")
        setattr(ds, keyword, value)
        path = tmp_path / "fluoro.dcm"
        ds.save_as(path)
    with pytest.raises(InputError, match=rf"fluoro\.dcm: {keyword} \(.*expected a finite"):
        read_image(path, decode=False)


@pytest.mark.parametrize("axis", ["X", "Y"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_ultrasound_calibration_is_refused(case, tmp_path, axis, value):
    ds = pydicom.dcmread(case / "us_clip.dcm")
    setattr(ds.SequenceOfUltrasoundRegions[0], f"PhysicalDelta{axis}", value)
    path = tmp_path / "us.dcm"
    ds.save_as(path)
    with pytest.raises(InputError, match=rf"Regions\[0\] PhysicalDelta{axis} .*finite"):
        read_image(path, decode=False)


def test_default_decode_limit_is_one_gib(monkeypatch):
    monkeypatch.delenv(_dicomread.MAX_DECODED_ENV, raising=False)
    assert _dicomread.max_decoded_bytes() == 1024**3


def _jpeg_16():
    buf = io.BytesIO()
    PILImage.new("L", (16, 16), 90).save(buf, "JPEG")
    return bytearray(buf.getvalue())


def _clip_with_frames(case, tmp_path, frames: list[bytes], tsyntax=JPEGBaseline8Bit):
    """The sample ultrasound clip reduced to 16 x 16 pixels with the given frames."""
    ds = pydicom.dcmread(case / "us_clip.dcm")
    ds.file_meta.TransferSyntaxUID = tsyntax
    ds.Rows = ds.Columns = 16
    ds.NumberOfFrames = len(frames)
    del ds.SequenceOfUltrasoundRegions
    if "FrameTimeVector" in ds:
        del ds.FrameTimeVector
    ds.PixelData = encapsulate(frames)
    path = tmp_path / "clip.dcm"
    ds.save_as(path)
    return path


@pytest.mark.parametrize("deferred", [False, True])
def test_jpeg_frame_declaring_another_size_is_refused_before_decoding(
    case, tmp_path, monkeypatch, deferred
):
    # The attack: SOF0 patched to 65000 x 65000 under a small header took 16.7 GB.
    # Here 64 x 64, which an unchecked decoder handles without harm.
    good = bytes(_jpeg_16())
    path = _clip_with_frames(case, tmp_path, [good, good])
    assert read_image(path).array.shape == (2, 16, 16)
    bad = _jpeg_16()
    sof = bad.index(b"\xff\xc0")
    struct.pack_into(">HH", bad, sof + 5, 64, 64)
    path = _clip_with_frames(case, tmp_path, [good, bytes(bad)])
    if deferred:  # pixel data read from the file, not held in memory
        monkeypatch.setattr(fio, "_DEFER_BYTES", 64)
    with pytest.raises(
        CorruptFileError, match=r"frame 2: codestream declares 64 x 64, header says .* 16 x 16"
    ):
        read_image(path)


def test_jpeg2000_and_jpegls_frame_sizes_are_read_from_their_headers(case, tmp_path):
    # JPEG 2000 / HTJ2K SIZ (Xsiz, Ysiz less the offsets) and JPEG-LS SOF55.
    siz = b"\xff\x4f\xff\x51" + struct.pack(">HHLLLL", 41, 0, 70050, 65010, 50, 10)
    assert fio._codestream_size(siz + b"\0" * 16) == (65000, 70000)
    jls = b"\xff\xd8\xff\xe0\x00\x04\x00\x00\xff\xf7\x00\x0b\x08" + struct.pack(">HH", 9, 7)
    jls += b"\x01\x01\x11\x00"  # one component: the SOF55 segment is complete
    assert fio._codestream_size(jls) == "more"  # no scan yet: an LSE may follow
    assert fio._codestream_size(jls + b"\xff\xda") == (9, 7)
    assert fio._codestream_size(jls, final=True) == (9, 7)
    # JPEG-LS oversize dimensions (LSE ID 4, 32-bit) replace the SOF55's.
    lse = b"\xff\xf8\x00\x0c\x04\x04" + struct.pack(">LL", 70000, 80000)
    assert fio._codestream_size(jls + lse + b"\xff\xda") == (70000, 80000)
    path = _clip_with_frames(case, tmp_path, [siz + b"\0" * 64], JPEG2000Lossless)
    with pytest.raises(CorruptFileError, match=r"frame 1: codestream declares 65000 x 70000"):
        read_image(path)


def _mhd(folder, name, data_file, size="8 8"):
    path = folder / name
    path.write_text(
        f"ObjectType = Image\nNDims = {len(size.split())}\nDimSize = {size}\n"
        f"ElementType = MET_UCHAR\nElementDataFile = {data_file}\n"
    )
    return path


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_image_header_naming_a_fifo_or_a_foreign_file_is_refused(tmp_path):
    # A FIFO hung `info --decode`; /etc/passwd was read as pixels.
    (tmp_path / "pixels.raw").write_bytes(bytes(64))
    assert read_image(_mhd(tmp_path, "ok.mhd", "pixels.raw")).array.shape == (1, 8, 8)
    for target in ("/etc/passwd", "../pixels.raw", "sub/pixels.raw", "LIST"):
        with pytest.raises(InputError, match=r"is not a plain file name in the header's folder"):
            read_image(_mhd(tmp_path, "far.mhd", target), decode=False)
    (tmp_path / "link.raw").symlink_to(tmp_path / "pixels.raw")
    with pytest.raises(InputError, match="not a regular file"):
        read_image(_mhd(tmp_path, "link.mhd", "link.raw"))
    nhdr = tmp_path / "far.nhdr"
    nhdr.write_text(
        "NRRD0004\ntype: uint8\ndimension: 2\nsizes: 8 8\nencoding: raw\ndata file: /etc/passwd\n\n"
    )
    with pytest.raises(InputError, match=r"far\.nhdr: data file '/etc/passwd' is not a plain"):
        read_image(nhdr)
    nhdr.write_bytes(nhdr.read_bytes().replace(b"\n", b"\r"))  # teem accepts CR lines
    with pytest.raises(InputError, match=r"far\.nhdr: data file '/etc/passwd' is not a plain"):
        read_image(nhdr)
    # Last: without the check this read never returns.
    os.mkfifo(tmp_path / "pipe.raw")
    with pytest.raises(InputError, match=r"fifo\.mha: ElementDataFile 'pipe\.raw' is not a reg"):
        read_image(_mhd(tmp_path, "fifo.mha", "pipe.raw"))


def test_plain_image_above_the_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    # A 1024 x 1024 x 1900 uint8 MHA (1.86 GiB, under the old 2 GiB limit) ended `fuse`
    # in "internal error: Unable to allocate"; its header alone now refuses it.
    monkeypatch.delenv(_dicomread.MAX_DECODED_ENV, raising=False)
    (tmp_path / "big.raw").write_bytes(b"")
    path = _mhd(tmp_path, "big.mhd", "big.raw", size="1024 1024 1900")
    with pytest.raises(InputError, match=r"big\.mhd: declares 1024 x 1024 x 1900 .*1 GiB limit"):
        read_image(path)
    # A file SimpleITK cannot size is refused, not read unsized.
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with pytest.raises(InputError, match=r"bad\.png: .*SimpleITK cannot read it"):
        read_image(bad)


def test_frame_header_split_over_fragments_is_still_checked(case, tmp_path):
    # SOI and the start of APP0 alone in the first fragment, SOF0 in the second.
    bad = _jpeg_16()
    sof = bad.index(b"\xff\xc0")
    struct.pack_into(">HH", bad, sof + 5, 64, 64)

    def item(data: bytes) -> bytes:
        return b"\xfe\xff\x00\xe0" + struct.pack("<L", len(data)) + data

    path = _clip_with_frames(case, tmp_path, [bytes(_jpeg_16())])
    ds = pydicom.dcmread(path)
    ds.PixelData = item(b"") + item(bytes(bad[:4])) + item(bytes(bad[4:]) + b"\0" * (len(bad) % 2))
    ds.save_as(path)
    with pytest.raises(CorruptFileError, match=r"frame 1: codestream declares 64 x 64"):
        read_image(path)
