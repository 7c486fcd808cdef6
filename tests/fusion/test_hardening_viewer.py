"""Hardening of fuse, viewer.html and report.html: escaping, bounded size, plausible transforms."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import shutil
import tracemalloc
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hybridfuse.fusion import InputError
from hybridfuse.fusion.fuse import FrameSpool, check_transform, fuse_images, moving_box
from hybridfuse.fusion.viewer import ViewerFrames, render_viewer
from hybridfuse.registration import Transform

HOSTILE = [
    "</script><script>alert('LM')</script>",
    "<!--<script>alert('c')</script>",
    '<img src=x onerror="alert(1)">',
    "a & b &amp; c",
    "line\u2028sep\u2029para",
    "quotes \" ' ` done",
    "</SCRIPT ><svg onload=alert(2)>",
    "=cmd|' /C calc'!A0",
]


class _Page(HTMLParser):
    """Every element, attribute and text of a page, as a browser's tokenizer sees them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.scripts: list[tuple[dict, str]] = []
        self.text: list[str] = []
        self._in_script: dict | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs
        if tag == "script":
            self._in_script = dict(attrs)
            self.scripts.append((self._in_script, ""))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None

    def handle_data(self, data):
        if self._in_script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        else:
            self.text.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def _tiny_viewer(n=3, **kw) -> ViewerFrames:
    vf = ViewerFrames(n, **kw)
    rng = np.random.default_rng(0)
    for k in range(n):
        f = rng.integers(0, 255, (8, 8), dtype=np.uint8)
        vf.add(k, f, f, np.ones((8, 8), bool))
    return vf


def _viewer_data(page: _Page) -> dict:
    (data,) = [t for a, t in page.scripts if a.get("type") == "application/json"]
    return json.loads(data)


# --- escaping: viewer.html --------------------------------------------------------------


def test_hostile_names_and_label_stay_data_in_the_viewer():
    landmarks = [{"name": s, "x": 1.0 + i, "y": 2.0} for i, s in enumerate(HOSTILE)]
    html = render_viewer(
        _tiny_viewer(),
        times_s=[0.0, 0.1, 0.2],
        mm_per_px=0.3,
        landmarks=landmarks,
        case_label=HOSTILE[0] + HOSTILE[2],
    )
    page = _parse(html)
    # Exactly the page's own two scripts: the JSON data block and the constant code.
    assert page.tags.count("script") == 2
    assert [a.get("type") for a, _ in page.scripts] == ["application/json", None]
    assert [a for a, _ in page.attrs if a.lower().startswith("on")] == []
    assert "img" not in page.tags and "svg" not in page.tags
    data = _viewer_data(page)
    assert [lm["name"] for lm in data["landmarks"]] == HOSTILE  # round-trips exactly
    assert data["label"] == HOSTILE[0] + HOSTILE[2]
    assert "hybridfuse viewer — " + HOSTILE[0] + HOSTILE[2] in "".join(page.text)
    assert "\u2028" not in html and "\u2029" not in html  # raw, they end a JS line


def test_hostile_quality_texts_stay_data_in_the_viewer():
    from hybridfuse.fusion.viewer import ViewerContext

    q = {"verdict": HOSTILE[0], "reasons": HOSTILE, "intensity_refinement": HOSTILE[6]}
    ctx = ViewerContext(quality=q, colormap="gray")
    html = render_viewer(_tiny_viewer(), times_s=[0, 1, 2], mm_per_px=None, landmarks=[],
                         case_label="c", context=ctx)  # fmt: skip
    page = _parse(html)
    assert page.tags.count("script") == 2
    assert [a for a, _ in page.attrs if a.lower().startswith("on")] == []
    data = _viewer_data(page)
    assert data["quality"]["reasons"] == HOSTILE and data["quality"]["verdict"] == HOSTILE[0]
    assert "\u2028" not in html and "\u2029" not in html


def test_csp_admits_exactly_the_viewer_code():
    page = _parse(
        render_viewer(
            _tiny_viewer(), times_s=[0, 1, 2], mm_per_px=None, landmarks=[], case_label="c"
        )
    )
    (csp,) = [v for a, v in page.attrs if a == "content" and "script-src" in (v or "")]
    (code,) = [t for a, t in page.scripts if a.get("type") is None]
    digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[1]


def test_non_finite_values_do_not_break_the_payload():
    html = render_viewer(
        _tiny_viewer(),
        times_s=[0.0, float("nan"), float("inf")],
        mm_per_px=float("nan"),
        landmarks=[{"name": "a", "x": float("nan"), "y": 1}, {"name": "b", "x": 1, "y": 2}],
        case_label="c",
        fps=float("inf"),
    )
    data = _viewer_data(_parse(html))
    assert data["times"] == [0.0, None, None] and data["mmPerPx"] is None
    assert [lm["name"] for lm in data["landmarks"]] == ["b"]


def test_fuse_writes_hostile_landmark_names_as_data(fused, tmp_path):
    _, _, _, pair, fixed, moving = fused
    out = tmp_path / "o"
    lms = [{"name": s, "x": 100.0, "y": 100.0 + i} for i, s in enumerate(HOSTILE)]
    fuse_images(
        fixed,
        moving,
        Transform(np.asarray(pair["moving_to_fixed_pixel"])),
        out,
        video="none",
        dicom=False,
        frames=[0],
        landmarks=lms,
    )
    page = _parse((out / "viewer.html").read_text(encoding="utf-8"))
    assert page.tags.count("script") == 2
    assert [a for a, _ in page.attrs if a.lower().startswith("on")] == []
    assert [lm["name"] for lm in _viewer_data(page)["landmarks"]] == HOSTILE


# --- escaping: report.html --------------------------------------------------------------


_SAMPLE = Path(__file__).resolve().parents[2] / "testdata" / "sample" / "lumbar-mbb-seed1"
#: Free-text fields of dose.json: names, sources, notes, flags (never looked up as keys).
_TEXT_KEYS = {
    "schema", "software_version", "manufacturer", "model", "procedure", "region",
    "reference_point", "plane", "input", "file", "path", "sop_instance_uid", "note", "source",
    "reason", "interval_note",
}  # fmt: skip


def _inject(node, s: str, count: list):
    """``node`` with every free-text leaf (and every flag and assumption) replaced by ``s``."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in _TEXT_KEYS and isinstance(v, str):
                count[0] += 1
                out[k] = s
            elif k in ("flags", "assumptions") and isinstance(v, list):
                count[0] += len(v)
                out[k] = [s] * len(v)
            else:
                out[k] = _inject(v, s, count)
        return out
    if isinstance(node, list):
        return [_inject(v, s, count) for v in node]
    return node


@pytest.fixture(scope="module")
def sample_report():
    from hybridfuse.dose.report import build_dose_report

    report = build_dose_report(_SAMPLE / "rdsr.dcm", us_clips=[_SAMPLE / "us_clip.dcm"])
    report["flags"] = ["a flag", "another flag"]  # the sample has none; flags are shown first
    return report


@pytest.mark.parametrize("s", HOSTILE)
def test_every_report_field_is_escaped(s, sample_report, monkeypatch):
    from hybridfuse.dose import html as report_html
    from hybridfuse.dose.html import render_report_html

    # The timeline is a PNG (no text reaches the page); skip drawing it.
    monkeypatch.setattr(report_html, "timeline_png", lambda *a, **k: b"png")

    count = [0]
    hostile = _inject({k: v for k, v in sample_report.items() if not k.startswith("_")}, s, count)
    assert count[0] >= 15  # the sample really carries free text in many places
    html = render_report_html(hostile, [], [], None)
    page = _parse(html)
    assert "script" not in page.tags
    assert [a for a, _ in page.attrs if a.lower().startswith("on")] == []
    assert not {"iframe", "object", "embed", "svg", "form", "input", "a"} & set(page.tags)
    # The hostile text is on the page only as text: never raw in the markup...
    if any(c in s for c in "<>&"):
        assert s not in html
    # ...and it is shown (flags, assumptions, inputs, device and more come back as text).
    assert "".join(page.text).count(s) >= 6
    (csp,) = [v for a, v in page.attrs if a == "content"]
    assert "default-src 'none'" in csp and "script-src" not in csp


# --- bounded viewer ---------------------------------------------------------------------


def test_long_runs_are_evenly_subsampled_and_say_so():
    vf = _tiny_viewer(400)
    info = vf.summary()
    assert info["frames_shown"] == 100 and info["every"] == 4
    assert info["output_frames"] == list(range(0, 400, 4))
    assert info["note"] == "showing 100 of 400 frames, every 4th"
    data = _viewer_data(
        _parse(
            render_viewer(
                vf, times_s=list(range(400)), mm_per_px=None, landmarks=[], case_label="c"
            )
        )
    )
    assert data["frameIndex"] == list(range(0, 400, 4)) and data["totalFrames"] == 400
    assert data["note"] == info["note"] and len(data["frames"]) == 100


def test_byte_budget_doubles_the_stride_and_keeps_frames_even():
    rng = np.random.default_rng(1)
    vf = ViewerFrames(64, max_frames=64, max_bytes=60_000)
    for k in range(64):
        # A blank first frame predicts a small run; the noise after it overruns the budget.
        noise = rng.integers(0, 255, (32, 32), dtype=np.uint8) * (k > 0)  # incompressible
        vf.add(k, noise, noise, np.ones((32, 32), bool))
    idx = vf.indices
    assert idx[0] == 0 and len(idx) > 1
    assert set(np.diff(idx)) == {vf.stride}  # evenly spaced
    assert vf.stride > 1 and vf.nbytes <= 60_000


def _long_run(fixed, moving, n):
    reps = int(np.ceil(n / fixed.n_frames))
    arr = np.concatenate([fixed.array] * reps)[:n]
    long_fixed = dataclasses.replace(
        fixed, array=arr, frame_times_s=np.arange(n) / 7.5, acquisition_datetime=None
    )
    return long_fixed, dataclasses.replace(moving, acquisition_datetime=None)


def test_fuse_embeds_a_bounded_viewer_but_writes_every_frame(fused, tmp_path):
    import pydicom

    _, _, _, pair, fixed, moving = fused
    long_fixed, long_moving = _long_run(fixed, moving, 12)
    out = tmp_path / "o"
    summary = fuse_images(
        long_fixed,
        long_moving,
        Transform(np.asarray(pair["moving_to_fixed_pixel"])),
        out,
        video="gif",
        viewer_max_frames=4,
    )
    assert summary["viewer"]["note"] == "showing 4 of 12 frames, every 3rd"
    assert json.loads((out / "fuse.json").read_text())["viewer"]["output_frames"] == [0, 3, 6, 9]
    data = _viewer_data(_parse((out / "viewer.html").read_text(encoding="utf-8")))
    assert len(data["frames"]) == 4 and data["note"] == summary["viewer"]["note"]
    assert len(list(out.glob("fused_*.png"))) == 12
    assert int(pydicom.dcmread(out / "fused_sc.dcm").NumberOfFrames) == 12
    from PIL import Image

    with Image.open(out / "fused.gif") as gif:
        assert gif.n_frames == 12
    # The streamed DICOM frames are the PNG frames.
    ds = pydicom.dcmread(out / "fused_sc.dcm")
    with Image.open(out / "fused_007.png") as png:
        assert np.array_equal(ds.pixel_array[7], np.asarray(png))


def test_viewer_with_a_distinct_ultrasound_per_frame_is_smaller_than_the_pngs(fused, tmp_path):
    _, _, _, pair, fixed, moving = fused
    n = 12
    long_fixed, long_moving = _long_run(fixed, moving, n)
    m = long_moving.array  # one ultrasound frame per fluoroscopy frame, all different
    clip = np.stack([np.roll(m[k % len(m)], k, axis=1) for k in range(n)])
    long_moving = dataclasses.replace(long_moving, array=clip, frame_times_s=np.arange(n) / 7.5)
    out = tmp_path / "o"
    fuse_images(long_fixed, long_moving, Transform(np.asarray(pair["moving_to_fixed_pixel"])),
                out, video="none", dicom=False)  # fmt: skip
    html = (out / "viewer.html").read_bytes()
    data = _viewer_data(_parse(html.decode("utf-8")))
    # Nothing left out: every frame shown, each with its own ultrasound frame.
    assert data["frameIndex"] == list(range(n)) and len(data["usImages"]) == n
    assert data["usNote"] == "" and data["layers"] == []  # warped in the page
    pngs = sum(p.stat().st_size for p in out.glob("fused_*.png"))
    assert len(html) < pngs, (len(html), pngs)


def test_frame_spool_reads_back_what_it_was_given(tmp_path):
    spool = FrameSpool(tmp_path)
    frames = [np.full((3, 4, 3), k, np.uint8) for k in range(5)]
    for f in frames:
        spool.append(f)
    assert len(spool) == 5 and list(tmp_path.iterdir()) == []  # no name on disk
    assert all(np.array_equal(a, b) for a, b in zip(spool, frames, strict=True))
    assert np.array_equal(spool[-1], frames[4]) and len(spool[1:3]) == 2
    with pytest.raises(IndexError):
        spool[5]
    spool.close()


@pytest.mark.slow
def test_fuse_memory_does_not_grow_with_the_number_of_frames(fused, tmp_path):
    _, _, _, pair, fixed, moving = fused
    tr = Transform(np.asarray(pair["moving_to_fixed_pixel"]))
    peaks = []
    for n in (8, 40):
        long_fixed, long_moving = _long_run(fixed, moving, n)
        tracemalloc.start()
        fuse_images(long_fixed, long_moving, tr, tmp_path / f"o{n}", video="mp4",
                    dicom=False, viewer_max_frames=4)  # fmt: skip
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # Holding the fused frames costs >= 1.8 MB per 512x512 frame (RGB + layers): 32
    # more frames would add > 55 MB. Streaming keeps the difference to noise.
    assert peaks[1] - peaks[0] < 8e6, peaks


# --- transform plausibility -------------------------------------------------------------

GOOD = np.array([[0.55, 0.04, 101.3], [-0.03, 0.57, 62.7], [2e-5, -1e-5, 1.0]])
BOX = (160.0, 56.0, 479.0, 455.0)  # the sample ultrasound region
FIXED = (512, 512)


@pytest.mark.parametrize(
    ("matrix", "why"),
    [
        (np.array([[1, 2, 0], [0.5, 1.0000001, 0], [0, 0, 1.0]]), "scale|singular|stretches"),
        (GOOD * np.array([[1e12, 1e12, 1], [1e12, 1e12, 1], [1, 1, 1]]), "near-singular"),
        (np.array([[200, 0, 256 - 200 * 320], [0, 200, 256 - 200 * 256], [0, 0, 1.0]]), "scale"),
        (np.array([[0.5, 0, 100], [0, 0.5, 60], [-1 / 300, 0, 1.0]]), "horizon"),
        (np.array([[0.5, 0, 100], [0, 0.5, 60], [-1 / 500, 0, 1.0]]), "perspective varies"),
        (np.array([[0.5, 0, 1e5], [0, 0.5, 60], [0, 0, 1.0]]), "entirely outside"),
        (np.array([[1e-2, 0, 100], [0, 1e-2, 60], [0, 0, 1.0]]), "area"),
        (np.array([[1, 0, 0], [0, np.nan, 0], [0, 0, 1.0]]), "finite"),
    ],
    ids=["near-singular", "1e12", "200x", "horizon", "foreshortening", "outside", "tiny", "nan"],
)
def test_implausible_transforms_are_refused(matrix, why):
    with pytest.raises(InputError, match=why) as err:
        check_transform(matrix, BOX, FIXED, source="t.json")
    assert str(err.value).startswith("t.json: ") and "\n" not in str(err.value)


def test_true_transforms_face_on_and_edge_on_pass(fused):
    _, _, truth, _, fixed, moving = fused
    for pair in truth["pairs"]:
        m = check_transform(np.asarray(pair["moving_to_fixed_pixel"]), moving_box(moving), FIXED)
        assert m["anisotropy"] < 50 and m["foreshortening"] < 1.2
    check_transform(GOOD, BOX, FIXED)
    check_transform(GOOD @ np.diag([-1.0, 1.0, 1.0]) + [[0, 0, 400], [0] * 3, [0] * 3], BOX, FIXED)


def test_fuse_refuses_a_horizon_in_the_field_before_writing(fused, tmp_path):
    _, _, _, _, fixed, moving = fused
    h = np.array([[0.5, 0, 100], [0, 0.5, 60], [-1 / 300, 0, 1.0]])
    with pytest.raises(InputError, match="^bad.json: .*horizon"):
        fuse_images(fixed, moving, Transform(h), tmp_path / "o", transform_source="bad.json")
    assert list(tmp_path.iterdir()) == []


def test_cli_fuse_exits_2_on_an_implausible_transform(fused, tmp_path):
    from hybridfuse.cli.main import cli

    _, _, _, _, fixed, moving = fused
    t = tmp_path / "t.json"
    h = [[0.5, 0, 100], [0, 0.5, 60], [-1 / 300, 0, 1.0]]  # horizon through x = 300
    t.write_text(json.dumps({"schema": "hybridfuse.transform/1", "moving_to_fixed_pixel": h}))
    res = CliRunner().invoke(
        cli,
        ["fuse", "--fixed", fixed.source_path, "--moving", moving.source_path,
         "--transform", str(t), "--out", str(tmp_path / "o")],
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    assert f"{t}: the homography's horizon" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) <= 2  # the progress label, one error line
    assert not (tmp_path / "o").exists()


# --- outputs ----------------------------------------------------------------------------


def test_fuse_json_records_inputs_by_label_and_sha256(fused, tmp_path):
    _, _, _, pair, fixed, moving = fused
    tr = Transform(np.asarray(pair["moving_to_fixed_pixel"]))
    for phi in (False, True):
        out = tmp_path / f"o{phi}"
        fuse_images(fixed, moving, tr, out, video="none", dicom=False, frames=[0],
                    include_phi=phi)  # fmt: skip
        text = (out / "fuse.json").read_text()
        rec = json.loads(text)["inputs"]
        assert rec["fixed"]["input"] == f"fluoroscopy (sha256 {rec['fixed']['sha256'][:12]})"
        assert re.fullmatch("[0-9a-f]{64}", rec["moving"]["sha256"])
        folder = str(Path(fixed.source_path).parent)
        assert (folder in text) is phi
        assert (Path(fixed.source_path).name in text) is phi


def test_out_may_not_contain_an_input(fused, tmp_path):
    from hybridfuse._safeio import UnsafeOutputError

    _, _, _, pair, fixed, moving = fused
    case = Path(fixed.source_path).parent
    before = sorted(p.name for p in case.iterdir())
    tr = Transform(np.asarray(pair["moving_to_fixed_pixel"]))
    for out in (case, case.parent):
        with pytest.raises(UnsafeOutputError, match="contains the input"):
            fuse_images(fixed, moving, tr, out, overwrite=True, video="none")
    assert sorted(p.name for p in case.iterdir()) == before


def test_a_failure_mid_run_leaves_nothing(fused, tmp_path):
    _, _, _, pair, fixed, moving = fused

    def boom(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fuse_images(fixed, moving, Transform(np.asarray(pair["moving_to_fixed_pixel"])),
                    tmp_path / "o", video="none", progress=boom)  # fmt: skip
    assert list(tmp_path.iterdir()) == []


# --- in a browser (optional) ------------------------------------------------------------

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)
@pytest.mark.slow
def test_no_alert_fires_in_a_browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    page = tmp_path / "viewer.html"
    lms = [{"name": s, "x": 1.0, "y": 1.0} for s in HOSTILE]
    from hybridfuse.fusion.viewer import ViewerContext

    hostile_quality = ViewerContext(quality={"verdict": HOSTILE[0], "reasons": HOSTILE})
    page.write_text(
        render_viewer(
            _tiny_viewer(),
            times_s=[0, 1, 2],
            mm_per_px=None,
            landmarks=lms,
            case_label=HOSTILE[0],
            context=hostile_quality,
        ),  # fmt: skip
        encoding="utf-8",
    )
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 f"--user-data-dir={tmp_path / 'chrome'}"):  # fmt: skip
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        # Record instead of blocking: any alert, confirm or prompt the page calls.
        drv.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument",
            {"source": "window.__calls = []; for (const f of ['alert', 'confirm', 'prompt'])"
                       " window[f] = m => window.__calls.push(String(m));"},
        )  # fmt: skip
        drv.get(page.as_uri())
        WebDriverWait(drv, 20).until(
            lambda d: d.execute_script("return window.viewerState && window.viewerState.ready")
        )
        drv.execute_script("document.getElementById('landmarks').click()")
        assert drv.execute_script("return window.__calls") == []
        names = drv.execute_script("return window.viewerData.landmarks.map(l => l.name)")
        assert names == HOSTILE
        banner = drv.execute_script("return document.getElementById('confidence').textContent")
        assert HOSTILE[0] in banner and HOSTILE[2] in banner  # shown as text
        assert drv.execute_script("return document.querySelectorAll('img, svg').length") == 0
    finally:
        drv.quit()
