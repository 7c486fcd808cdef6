"""Pixels that are not square: pictures shown square, DICOM on the grid with its aspect."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from hybridfuse.fusion import read_image
from hybridfuse.fusion.aspect import DisplayAspect, pixel_aspect
from hybridfuse.fusion.errors import InputError
from hybridfuse.fusion.export import write_gif, write_mp4, write_png
from hybridfuse.fusion.fuse import fuse_images

from .conftest import DISC


def _image(shape, spacing=None, ratio=None):
    from hybridfuse.fusion._image import Image

    return Image(
        array=np.zeros((1, *shape), np.uint8),
        modality="XA",
        pixel_spacing_mm=spacing,
        pixel_aspect_ratio=ratio,
        source_path="run.dcm",
    )


def _disc_aspect(grey: np.ndarray, centre) -> float:
    """Width / height of the dark disc at ``centre`` (x, y), from its second moments."""
    from scipy.ndimage import label

    parts, _ = label(grey < 16)  # the disc alone: the dark field edge is another part
    ys, xs = np.nonzero(parts == parts[int(round(centre[1])), int(round(centre[0]))])
    return float(np.sqrt(xs.var() / ys.var()))


# --- the pixel shape -------------------------------------------------------------------


def test_spacing_sets_the_display_shape_and_the_dicom_ratio():
    aspect = pixel_aspect(_image((512, 341), spacing=(0.37, 0.5555)))
    assert aspect.resampled and aspect.display_shape == (512, 512)
    assert aspect.viewer_scale() == pytest.approx([0.5555 / 0.37, 1.0])
    v, h = aspect.dicom_ratio()
    assert v / h == pytest.approx(0.37 / 0.5555, rel=1e-3)


def test_pixel_aspect_ratio_serves_without_spacing_and_spacing_wins_over_it():
    tall = pixel_aspect(_image((300, 400), ratio=(6.0, 5.0)))
    assert tall.display_shape == (360, 400) and "PixelAspectRatio" in tall.source
    both = pixel_aspect(_image((300, 400), spacing=(0.2, 0.2), ratio=(6.0, 5.0)))
    assert not both.resampled and "disagrees; spacing used" in both.source


def test_square_within_half_a_pixel_is_shown_as_it_is():
    rgb = np.zeros((512, 512, 3), np.uint8)
    aspect = pixel_aspect(_image((512, 512), spacing=(0.37, 0.3702)))
    assert not aspect.resampled
    assert aspect.to_display(rgb) is rgb and aspect.dicom_ratio() is None
    assert aspect.viewer_scale() == [1.0, 1.0]


def test_side_by_side_panes_are_resampled_apart():
    aspect = DisplayAspect((4, 4), row=1.0, col=2.0)
    left, right = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 200, np.uint8)
    out = aspect.to_display(np.concatenate([left, right], axis=1))
    assert out.shape == (4, 16, 3)
    assert (out[:, :8] == 0).all() and (out[:, 8:] == 200).all()  # no bleeding at the seam


def test_an_implausible_pixel_shape_is_refused_naming_the_file():
    with pytest.raises(InputError, match=r"^run\.dcm: .*10 times as tall as wide"):
        pixel_aspect(_image((100, 100), ratio=(10.0, 1.0)))


# --- fused outputs on the anisotropic case ---------------------------------------------------


@pytest.fixture(scope="module")
def fused_aniso(anisotropic, tmp_path_factory):
    out = tmp_path_factory.mktemp("fuse-aniso") / "out"
    a = anisotropic
    summary = fuse_images(
        read_image(a["fixed"]), a["moving"], a["transform"], out, frames=[0, 1],
        transform_frames=(0, a["pair"]["us_frame"]), landmarks=a["landmarks"],
    )  # fmt: skip
    return out, summary


def test_a_circle_of_the_scene_stays_a_circle_in_the_png_and_the_video(fused_aniso, anisotropic):
    import imageio_ffmpeg
    from PIL import Image as PILImage

    out, _ = fused_aniso
    png = np.asarray(PILImage.open(out / "fused_000.png").convert("L"))
    centre = (DISC[0], DISC[1])  # the display grid is the sample's square one again
    assert _disc_aspect(png, centre) == pytest.approx(1.0, abs=0.02)
    assert png.shape == (512, 512)
    reader = imageio_ffmpeg.read_frames(str(out / "fused.mp4"))
    size = next(reader)["size"]
    frame = np.frombuffer(next(reader), np.uint8).reshape(size[1], size[0], 3)
    reader.close()
    assert size == (512, 512)
    assert _disc_aspect(frame.mean(axis=2), centre) == pytest.approx(1.0, abs=0.02)


def test_the_dicom_keeps_the_grid_and_declares_the_pixel_aspect(fused_aniso, anisotropic):
    import pydicom

    out, _ = fused_aniso
    ds = pydicom.dcmread(out / "fused_sc.dcm")
    assert (ds.Rows, ds.Columns) == (512, 341)
    v, h = (int(x) for x in ds.PixelAspectRatio)
    assert v / h == pytest.approx(1 / anisotropic["factor"], rel=1e-3)
    grey = ds.pixel_array[0].mean(axis=2)
    assert _disc_aspect(grey, anisotropic["disc"]) == pytest.approx(
        1 / anisotropic["factor"], abs=0.02
    )  # the grid's own picture is squeezed: a viewer must apply the ratio


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy not installed")
def test_the_dicom_with_its_pixel_aspect_passes_dciodvfy(fused_aniso):
    out, _ = fused_aniso
    cmd = ["dciodvfy", str(out / "fused_sc.dcm")]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = (res.stdout + res.stderr).splitlines()
    assert [ln for ln in lines if ln.startswith("Error")] == []
    assert not [ln for ln in lines if "PixelAspectRatio" in ln or "Pixel Aspect" in ln]


def test_fuse_json_says_the_display_was_resampled_and_by_how_much(fused_aniso):
    out, summary = fused_aniso
    display = json.loads((out / "fuse.json").read_text())["display"]
    assert display == summary["display"]
    assert display["resampled"] is True
    assert display["grid_cols_rows"] == [341, 512] and display["display_cols_rows"] == [512, 512]
    assert display["pixel_shape_row_col"][1] == pytest.approx(0.37 * 512 / 341 / 0.37, rel=1e-5)
    assert "pixels 1.501 times as wide as tall" in display["note"]


# --- square pixels: outputs as they were --------------------------------------------------------


# Before the display step the PNG, GIF and MP4 were written from the fused frames the DICOM
# holds, as they are: square pixels must still give exactly those files.
SAMPLE_FPS = 1.0  # the sample's frames are 1000 ms apart


def test_square_pixels_give_the_png_and_gif_of_the_grid_byte_for_byte(fused, tmp_path):
    import pydicom

    out, summary, *_ = fused
    ds = pydicom.dcmread(out / "fused_sc.dcm")
    assert "PixelAspectRatio" not in ds and summary["display"]["resampled"] is False
    frames = list(ds.pixel_array)
    for k, frame in enumerate(frames):
        write_png(tmp_path / f"{k}.png", frame)
        assert (out / f"fused_{k:03d}.png").read_bytes() == (tmp_path / f"{k}.png").read_bytes()
    write_gif(tmp_path / "grid.gif", frames, SAMPLE_FPS)
    assert (out / "fused.gif").read_bytes() == (tmp_path / "grid.gif").read_bytes()


def test_square_pixels_give_the_video_of_the_grid_byte_for_byte(fused, tmp_path):
    import pydicom

    from hybridfuse.registration import Transform

    _, _, _, pair, fixed, moving = fused
    out = tmp_path / "out"
    matrix = Transform(np.asarray(pair["moving_to_fixed_pixel"]))
    fuse_images(fixed, moving, matrix, out, frames=[0, 1], transform_frames=(0, pair["us_frame"]))
    frames = list(pydicom.dcmread(out / "fused_sc.dcm").pixel_array)
    write_mp4(tmp_path / "grid.mp4", frames, SAMPLE_FPS)
    assert (out / "fused.mp4").read_bytes() == (tmp_path / "grid.mp4").read_bytes()


def test_pixel_aspect_ratio_is_read_and_a_bad_one_is_noted(tmp_path):
    import pydicom

    from hybridfuse.testdata import sample_case

    ds = pydicom.dcmread(sample_case() / "fluoro_run01_scout_lateral.dcm")
    del ds.ImagerPixelSpacing
    ds.PixelAspectRatio = [6, 5]
    ds.save_as(tmp_path / "ratio.dcm")
    image = read_image(tmp_path / "ratio.dcm", decode=False)
    assert image.pixel_aspect_ratio == (6.0, 5.0)
    assert pixel_aspect(image).display_shape == (614, 512)
    ds.PixelAspectRatio = [0, 5]
    ds.save_as(tmp_path / "bad.dcm")
    image = read_image(tmp_path / "bad.dcm", decode=False)
    assert image.pixel_aspect_ratio is None
    assert any("PixelAspectRatio (0028,0034) present but" in n for n in image.notes)
