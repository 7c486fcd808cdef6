"""Issue #13, landmarks part: bounded landmark fits, hostile landmark CSVs and transform.json.

Every refusal is an input error (exit 2 from the CLI) with one line naming the file and,
for a CSV, the line at fault; nothing is written when it is refused.
"""

from __future__ import annotations

import json
import tracemalloc
from itertools import combinations

import numpy as np
import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.fusion.coregister import (
    check_landmarks,
    read_landmarks_csv,
    read_transform_json,
    write_transform_json,
)
from hybridfuse.fusion.errors import InputError
from hybridfuse.registration import RegistrationError, Transform, fit_landmarks, fit_model
from hybridfuse.registration import landmarks as lm_module
from hybridfuse.registration.errors import LandmarkInputError

H_TRUE = np.array([[0.55, 0.05, 40.0], [-0.02, 0.5, -12.0], [2e-4, -1e-4, 1.0]])
HEADER = "name,moving_x,moving_y,fixed_x,fixed_y"


def _pairs(n, rng, outliers=(), noise=0.3):
    src = rng.uniform(0, 400, (n, 2))
    dst = Transform(H_TRUE).apply(src) + rng.normal(0, noise, (n, 2))
    for i in outliers:
        dst[i] += [25.0, -18.0]
    return src, dst


def _peak_mib(fn):
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


# --- 1. bounded fits -------------------------------------------------------------------


def test_301_pairs_with_an_outlier_fit_in_bounded_memory(rng):
    # The old code listed all C(301, 4) = 3.4e8 subsets first: 3.65 GB, then MemoryError.
    src, dst = _pairs(301, rng, outliers=[17])
    fit, peak = _peak_mib(lambda: fit_landmarks(src, dst, "projective", reject_threshold_px=4))
    assert np.flatnonzero(~fit.inliers).tolist() == [17]
    assert peak < 40


def test_10000_consistent_pairs_never_build_a_2n_square_matrix(rng):
    # A full SVD of the 2n x 9 DLT system holds a 2n x 2n U: 3.2 GB for 10,000 pairs.
    src, dst = _pairs(10_000, rng)
    fit, peak = _peak_mib(lambda: fit_landmarks(src, dst, "projective", reject_threshold_px=4))
    assert fit.inliers.all()
    # 0.3 px noise averaged over 10,000 pairs: the fitted map is within 0.05 px of the truth.
    assert np.abs(fit.transform.apply(src) - Transform(H_TRUE).apply(src)).max() < 0.05
    assert peak < 60  # linear in n: a few arrays of 2n x 9 doubles


@pytest.mark.parametrize("model", ["affine", "projective"])
def test_ransac_draws_are_seeded_and_bounded(model, rng, monkeypatch):
    src, dst = _pairs(2000, rng, outliers=range(0, 2000, 50))
    tried = []
    real = lm_module._minimal_fits

    def spy(model_, s, d, w, subsets):
        tried.append(subsets.shape)
        return real(model_, s, d, w, subsets)

    monkeypatch.setattr(lm_module, "_minimal_fits", spy)
    thr = 4.0 if model == "projective" else 15.0  # affine misfits the perspective a little
    a = fit_landmarks(src, dst, model, reject_threshold_px=thr)
    b = fit_landmarks(src, dst, model, reject_threshold_px=thr)
    assert tried == [(lm_module.RANSAC_DRAWS, len(H_TRUE) + (model == "projective"))] * 2
    assert np.array_equal(a.inliers, b.inliers)
    assert np.array_equal(a.transform.matrix, b.transform.matrix)
    assert set(np.flatnonzero(~a.inliers)) == set(range(0, 2000, 50))


def test_few_pairs_try_every_subset_and_keep_the_best_consensus(rng):
    # C(10, 4) = 210 <= 500: exhaustive, so the answer equals a brute-force search.
    src, dst = _pairs(10, rng, outliers=[2, 7])
    fit = fit_landmarks(src, dst, "projective", reject_threshold_px=4.0)
    best = max(
        (
            np.linalg.norm(
                Transform(fit_model("projective", src[s], dst[s])).apply(src) - dst, axis=1
            )
            < 4.0
            for s in map(list, combinations(range(10), 4))
        ),
        key=lambda ok: ok.sum(),
    )
    assert np.array_equal(fit.inliers, best)
    assert fit.rejected == ["2", "7"]


def test_leave_one_out_is_exact_for_few_pairs(rng):
    src, dst = _pairs(12, rng)
    fit = fit_landmarks(src, dst, "projective", reject_threshold_px=None)
    i = 5
    keep = np.arange(12) != i
    hi = fit_model("projective", src[keep], dst[keep])
    expected = np.linalg.norm(Transform(hi).apply(src[i]) - dst[i])
    assert fit.loo_tre_px[i] == pytest.approx(expected, rel=1e-9)
    assert fit.loo_pairs == 12 and not fit.loo_sampled


@pytest.mark.parametrize("model", ["affine", "projective"])
def test_leave_one_out_of_many_pairs_is_a_stated_sample_close_to_refits(model, rng):
    src, dst = _pairs(1000, rng, noise=1.0)
    fit = fit_landmarks(src, dst, model, reject_threshold_px=None)
    done = np.flatnonzero(np.isfinite(fit.loo_tre_px))
    assert fit.loo_pairs == len(done) == lm_module.LOO_SAMPLE
    assert fit.loo_sampled
    for i in done[:5]:  # the one-step projective refit agrees with a full refit
        keep = np.arange(1000) != i
        hi = fit_model(model, src[keep], dst[keep])
        expected = np.linalg.norm(Transform(hi).apply(src[i]) - dst[i])
        assert fit.loo_tre_px[i] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("src", "dst", "weights", "match"),
    [
        ([[0, 0], [1, 1], [2, 5]], [[0, 0], [1, 1], [2, 5]], None, "projective 4"),
        ([[0, 0], [1e300, 1], [2, 5], [9, 3]], [[0, 0], [1, 1], [2, 5], [4, 4]], None, "pair 1"),
        ([[0, 0], [np.nan, 1], [2, 5], [9, 3]], [[0, 0], [1, 1], [2, 5], [4, 4]], None, "pair 1"),
        (
            [[0, 0], [1, 1], [2, 5], [9, 3]],
            [[0, 0], [1, 1], [2, 5], [4, 4]],
            [1, np.nan, 1, 1],
            "weights",
        ),
        (
            [[0, 0], [1, 1], [2, 5], [9, 3]],
            [[0, 0], [1, 1], [2, 5], [4, 4]],
            [1, -1, 1, 1],
            "weights",
        ),
        ([[0, 0], [1, 1], [2, 2], [3, 3]], [[0, 0], [1, 1], [2, 5], [4, 4]], None, "one line"),
    ],
)
def test_unusable_pairs_raise_a_landmark_input_error(src, dst, weights, match):
    with pytest.raises(LandmarkInputError, match=match) as info:
        fit_landmarks(src, dst, "projective", weights=weights)
    assert isinstance(info.value, RegistrationError) and isinstance(info.value, ValueError)


# --- 2. landmark CSVs --------------------------------------------------------------------


def _csv(tmp_path, body, header=HEADER, name="lm.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes((header + "\n" + body).encode(encoding))
    return path


GOOD = "a,10,10,20,20\nb,100,10,70,20\nc,10,100,20,60\nd,100,100,80,70\n"


@pytest.mark.parametrize(
    ("body", "header", "where"),
    [
        ("a,1e300,10,20,20\n", HEADER, "line 2 (a): moving_x 1e+300 is not a pixel"),
        ("a,10,nan,20,20\n", HEADER, "line 2 (a): moving_y nan"),
        ("a,10,10,inf,20\n", HEADER, "line 2 (a): fixed_x inf"),
        ("a,10,10,20,abc\n", HEADER, "line 2 (a): fixed_y 'abc' is not a number"),
        ("a,10,10,20,\n", HEADER, "line 2 (a): no value for fixed_y"),
        ("a,10,10,20\n", HEADER, "line 2 (a): no value for fixed_y"),
        ("a,10,10,20,20\nb,1,2,3,4,5\n", HEADER, "line 3: more values than columns"),
        ("a,10,10,20,20,nan\n", HEADER + ",weight", "line 2 (a): weight nan is outside"),
        ("a,10,10,20,20,0\n", HEADER + ",weight", "line 2 (a): weight 0 is outside"),
        ("a,10,10,20,20,-2\n", HEADER + ",weight", "line 2 (a): weight -2 is outside"),
        ("a,10,10,20,20\n ,1,2,3,4\n", HEADER, "line 3: empty landmark name"),
        (
            "a,10,10,20,20\nb,1,2,3,4\na,5,6,7,8\n",
            HEADER,
            "line 4: landmark name 'a' repeats line 2",
        ),
        ("x" * 201 + ",1,2,3,4\n", HEADER, "line 2: landmark name of 201 characters"),
        ('"a\nb",1,2,3,4\n', HEADER, "line 3: landmark name 'a\\nb' holds control characters"),
        ("a\x1b[2J,1,2,3,4\n", HEADER, "line 2: landmark name 'a\\x1b[2J' holds control"),
        ("a,1,2,3,4\n", "name,mx,my,fixed_x,fixed_y", "missing column(s) moving_x, moving_y"),
        ("a;1,5;2;3;4\n", HEADER.replace(",", ";"), "seem separated by ';': save as comma"),
        ("", HEADER, "no landmark rows"),
    ],
)
def test_a_bad_csv_is_refused_naming_file_line_and_fault(tmp_path, body, header, where):
    path = _csv(tmp_path, body, header)
    with pytest.raises(InputError) as info:
        read_landmarks_csv(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and where in msg and "\n" not in msg


def test_a_spreadsheet_csv_with_a_byte_order_mark_and_spaces_is_read(tmp_path):
    path = _csv(tmp_path, GOOD.replace(",", ", "), header="\ufeff" + HEADER.replace(",", ", "))
    lm = read_landmarks_csv(path)
    assert lm.names == ("a", "b", "c", "d") and lm.lines == (2, 3, 4, 5)
    assert lm.source == str(path)


def test_a_file_that_is_not_utf8_is_refused(tmp_path):
    path = _csv(tmp_path, "Schr\xe4ge,1,2,3,4\n", encoding="latin-1")
    with pytest.raises(InputError, match="not a UTF-8 text file"):
        read_landmarks_csv(path)


def test_rows_and_bytes_are_capped(tmp_path, monkeypatch):
    import hybridfuse.fusion.coregister as co

    assert co.MAX_LANDMARK_ROWS == 100_000  # the documented limit
    monkeypatch.setattr(co, "MAX_LANDMARK_ROWS", 3)
    with pytest.raises(InputError, match="more than 3 landmark rows"):
        read_landmarks_csv(_csv(tmp_path, GOOD))
    monkeypatch.setattr(co, "MAX_LANDMARK_FILE_BYTES", 50)
    with pytest.raises(InputError, match="at most 0 MiB"):
        read_landmarks_csv(_csv(tmp_path, GOOD, name="big.csv"))


def test_points_outside_either_image_and_too_few_pairs_are_refused(tmp_path):
    lm = read_landmarks_csv(_csv(tmp_path, GOOD.replace("d,100,100", "d,700,100")))
    with pytest.raises(InputError, match=r"line 5 \(d\): moving \(ultrasound\) point \(700, 100\)"):
        check_landmarks(lm, "affine", (480, 640), (480, 640))
    lm = read_landmarks_csv(_csv(tmp_path, GOOD, name="ok.csv"))
    with pytest.raises(InputError, match=r"fixed \(fluoroscopy\) point \(70, 20\) lies outside"):
        check_landmarks(lm, "affine", (30, 60), (480, 640))
    check_landmarks(lm, "projective", (480, 640), (480, 640))  # inside both: accepted
    three = read_landmarks_csv(_csv(tmp_path, GOOD[: GOOD.index("d,")], name="three.csv"))
    check_landmarks(three, "projective", (480, 640), (480, 640))  # falls back to affine
    one = read_landmarks_csv(_csv(tmp_path, GOOD[: GOOD.index("b,")], name="one.csv"))
    too_few = "1 landmark pair; too few for the projective model or any simpler"
    with pytest.raises(InputError, match=too_few):
        check_landmarks(one, "projective", (480, 640), (480, 640))


# --- 3. transform.json -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not a JSON transform"),
        ("[1, 2]", "schema 'list'"),
        ('{"schema": "other/1"}', "schema 'other/1'"),
        ('{"schema": "hybridfuse.transform/1"}', "3 x 3 list of numbers"),
        (
            '{"schema": "hybridfuse.transform/1", "moving_to_fixed_pixel": [[1, 0], [0, 1]]}',
            "3 x 3",
        ),
        (
            '{"schema": "hybridfuse.transform/1", "moving_to_fixed_pixel": '
            '[[1, 0, 0], [0, "1", 0], [0, 0, 1]]}',
            "3 x 3 list of numbers",
        ),
        (
            '{"schema": "hybridfuse.transform/1", "moving_to_fixed_pixel": '
            "[[1, 0, 0], [0, NaN, 0], [0, 0, 1]]}",
            "NaN is not a JSON number",
        ),
        (
            '{"schema": "hybridfuse.transform/1", "moving_to_fixed_pixel": '
            "[[1, 0, 0], [0, 1e400, 0], [0, 0, 1]]}",
            "non-finite",
        ),
        (
            '{"schema": "hybridfuse.transform/1", "moving_to_fixed_pixel": '
            "[[1, 2, 0], [2, 4, 0], [0, 0, 1]]}",
            "singular",
        ),
        (
            '{"schema": "hybridfuse.transform/1", "model": "warp", "moving_to_fixed_pixel": '
            "[[1, 0, 0], [0, 1, 0], [0, 0, 1]]}",
            "unknown model 'warp'",
        ),
        ("[" * 100_000 + "]" * 100_000, "not a JSON transform"),
        (b"\xff\xfe{}", "not a JSON transform"),
    ],
)
def test_a_bad_transform_json_is_an_input_error_naming_the_file(tmp_path, text, match):
    path = tmp_path / "transform.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(InputError, match=match) as info:
        read_transform_json(path)
    assert str(info.value).startswith(f"{path}: ")


def test_transform_json_is_strict_json_written_without_a_predictable_temporary(tmp_path):
    target = tmp_path / "transform.json"
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / ".transform.json.partial").symlink_to(victim)  # the old temporary name
    write_transform_json(target, {"schema": "hybridfuse.transform/1", "v": float("nan")})
    assert victim.read_text() == "keep"
    assert json.loads(target.read_text(), parse_constant=pytest.fail)["v"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".transform.json.partial",
        "transform.json",
        "victim",
    ]


# --- the command line --------------------------------------------------------------------


@pytest.fixture
def case():
    from hybridfuse.testdata import sample_case

    return sample_case()


def _register(case, out, *extra):
    args = [
        "register",
        "--fixed",
        str(case / "fluoro_run02_confirm_lateral.dcm"),
        "--moving",
        str(case / "us_clip.dcm"),
        "--moving-frame",
        "6",
        "--metric",
        "none",
        "--out",
        str(out),
        *extra,
    ]
    return CliRunner().invoke(cli, args)


def _sample_rows(case):
    return (case / "landmarks" / "run02_confirm_lateral_f00_us06.csv").read_text().splitlines()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda r: [r[0], r[1]], "1 landmark pair; too few for the projective model"),
        (lambda r: [r[0], "far,700,20,200,100", *r[1:]], "line 2 (far): moving (ultrasound) point"),
        (lambda r: [r[0] + ",weight", *(x + ",nan" for x in r[1:])], "line 2 (needle_tip): weight"),
        (lambda r: [r[0], *r[1:], "bead1,1,2,3,4"], "landmark name 'bead1' repeats line 4"),
        (lambda r: [r[0], *r[1:], "wild,200,150,400,200", "wild2,300,300,150,300"], None),
    ],
)
def test_register_refuses_bad_landmarks_with_exit_2(case, tmp_path, edit, match):
    path = tmp_path / "lm.csv"
    path.write_text("\n".join(edit(_sample_rows(case))) + "\n")
    out = tmp_path / "reg"
    result = _register(case, out, "--landmarks", str(path))
    if match is None:  # two gross outliers among seven: rejected by name, exit 0
        assert result.exit_code == 0, result.output
        assert "rejected wild, wild2" in result.output
        return
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("hybridfuse: error: ") and str(path) in line and match in line
    assert "internal" not in result.output
    assert not out.exists()


def test_inconsistent_landmarks_exit_2(case, tmp_path):
    rows = _sample_rows(case)
    rng = np.random.default_rng(4)
    bad = [  # inside both imaged areas (ultrasound x 160-479, y 56-455), wildly inconsistent
        f"r{i},{x:.1f},{y:.1f},{u:.1f},{v:.1f}"
        for i, (x, y, u, v) in enumerate(rng.uniform(170, 350, (8, 4)))
    ]
    path = tmp_path / "lm.csv"
    path.write_text("\n".join([rows[0], *bad]) + "\n")
    result = _register(case, tmp_path / "reg", "--landmarks", str(path))
    assert result.exit_code == 2, result.output
    assert "inconsistent landmarks" in result.output and str(path) in result.output


def test_transform_json_holds_labels_and_digests_not_names(case, tmp_path):
    lm = str(case / "landmarks" / "run02_confirm_lateral_f00_us06.csv")
    result = _register(case, tmp_path / "a", "--landmarks", lm)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "a" / "transform.json").read_text()
    record = json.loads(text)
    assert str(case) not in text and "sop_instance_uid" not in text
    sha = record["fixed"]["sha256"]
    assert record["fixed"]["input"] == f"fluoroscopy (sha256 {sha[:12]})"
    assert "fluoro_run02" not in text and "us_clip" not in text
    assert len(record["moving"]["sha256"]) == 64 and record["moving"]["frame"] == 6
    assert record["landmarks"]["loo_tre_pairs"] == 5
    assert record["landmarks"]["loo_tre_sampled"] is False
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["transform.json"]
    result = _register(case, tmp_path / "b", "--landmarks", lm, "--include-phi")
    record = json.loads((tmp_path / "b" / "transform.json").read_text())
    assert record["fixed"]["path"] == str(case / "fluoro_run02_confirm_lateral.dcm")
    assert record["fixed"]["file"] == "fluoro_run02_confirm_lateral.dcm"
    assert record["fixed"]["sop_instance_uid"]
    # A written transform reads back as the start of the next registration.
    assert read_transform_json(tmp_path / "a" / "transform.json").model.value == record["model"]


def test_a_bad_init_transform_exits_2(case, tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text('{"schema": "hybridfuse.transform/1", "moving_to_fixed_pixel": 5}')
    result = _register(case, tmp_path / "reg", "--init-transform", str(bad))
    assert result.exit_code == 2, result.output
    assert str(bad) in result.output and "3 x 3" in result.output


def test_out_that_is_a_file_exits_2_before_registering(case, tmp_path):
    out = tmp_path / "file"
    out.write_text("mine")
    lm = str(case / "landmarks" / "run02_confirm_lateral_f00_us06.csv")
    result = _register(case, out, "--landmarks", lm)
    assert result.exit_code == 2, result.output
    assert "not a folder" in result.output and out.read_text() == "mine"


def test_devices_folders_and_bad_truth_are_refused_before_the_work(case, tmp_path):
    lm = str(case / "landmarks" / "run02_confirm_lateral_f00_us06.csv")
    truth = tmp_path / "truth.json"
    pair = {"fluoro_file": "fluoro_run02_confirm_lateral.dcm", "fluoro_frame": 0, "us_frame": 6}
    truth.write_text(json.dumps({"schema": "hybridfuse.synthetic-truth/1", "pairs": [pair]}))
    cases = [
        (["--landmarks", "/dev/zero"], "/dev/zero: not a regular file"),
        (["--landmarks", str(tmp_path)], f"{tmp_path}: not a regular file"),
        (["--init-transform", "/dev/zero"], "/dev/zero: not a regular file"),
        (["--landmarks", lm, "--truth", str(tmp_path / "none.json")], "none.json: no such file"),
        (
            ["--landmarks", lm, "--truth", str(truth)],
            f"{truth}: truth: a pair lacks or mistypes 'moving_to_fixed_pixel'",
        ),
    ]
    for extra, match in cases:
        result = _register(case, tmp_path / "reg", *extra)
        assert result.exit_code == 2, (extra, result.output)
        assert result.output.strip().splitlines()[-1].endswith(match), result.output
        assert not (tmp_path / "reg").exists()


def test_degenerate_landmarks_and_control_characters_in_names_exit_2(case, tmp_path):
    path = tmp_path / "line.csv"
    path.write_text(
        HEADER
        + "\n"
        + "".join(
            f"p{i},{200 + 10 * i},{200 + 10 * i},{200 + 5 * i},{200 + 7 * i}\n" for i in range(1, 6)
        )
    )
    result = _register(case, tmp_path / "reg", "--landmarks", str(path))
    assert result.exit_code == 2, result.output
    assert "coincide or lie on one line" in result.output and str(path) in result.output
    rows = _sample_rows(case)
    path.write_text("\n".join([*rows, '"x\u202ey",250,250,400,100']) + "\n")
    result = _register(case, tmp_path / "ok", "--landmarks", str(path))
    assert result.exit_code == 2, result.output
    assert "holds control characters" in result.output and "\u202e" not in result.output
    path.write_text("\n".join([*rows, "</script><b>,250,250,400,100"]) + "\n")
    result = _register(case, tmp_path / "ok", "--landmarks", str(path))
    assert result.exit_code == 0, result.output  # markup is the viewer's to escape
    assert "rejected </script><b>" in result.output


def test_transform_record_takes_known_digests_and_paths_only_with_phi(case):
    from hybridfuse._safeio import sha256_file
    from hybridfuse.fusion import read_image
    from hybridfuse.fusion.coregister import register_images, transform_record
    from hybridfuse.registration import RegistrationOptions

    fixed = read_image(case / "fluoro_run02_confirm_lateral.dcm")
    moving = read_image(case / "us_clip.dcm")
    lm = read_landmarks_csv(case / "landmarks" / "run02_confirm_lateral_f00_us06.csv")
    result = register_images(
        fixed, moving, moving_frame=6, landmarks=lm, options=RegistrationOptions(metric=None)
    )
    known = {fixed.source_path: "f" * 64}
    rec = transform_record(result, fixed, moving, fixed_frame=0, moving_frame=6, sha256=known)
    assert rec["fixed"] == {
        "input": "fluoroscopy (sha256 ffffffffffff)",
        "sha256": "f" * 64,
        "frame": 0,
    }
    assert rec["moving"]["sha256"] == sha256_file(case / "us_clip.dcm")
    assert "path" not in rec["moving"] and "sop_instance_uid" not in rec["moving"]
    phi = transform_record(result, fixed, moving, fixed_frame=0, moving_frame=6, include_phi=True)
    assert phi["moving"]["path"] == moving.source_path
    assert phi["moving"]["file"] == "us_clip.dcm"


def test_many_rejected_names_are_summed_up_on_the_terminal(case, tmp_path):
    rows = [r.split(",") for r in _sample_rows(case)[1:]]
    mov = np.array([[float(r[1]), float(r[2])] for r in rows])
    fix = np.array([[float(r[3]), float(r[4])] for r in rows])
    h = Transform(fit_model("affine", mov, fix))
    rng = np.random.default_rng(5)
    good = np.column_stack([rng.uniform(220, 380, 40), rng.uniform(170, 320, 40)])
    bad = rng.uniform(170, 350, (25, 4))
    lines = [HEADER]
    lines += [
        f"g{i},{x},{y},{u},{v}"
        for i, ((x, y), (u, v)) in enumerate(zip(good, h.apply(good), strict=True))
    ]
    lines += [f"b{i},{x},{y},{u},{v}" for i, (x, y, u, v) in enumerate(bad)]
    path = tmp_path / "lm.csv"
    path.write_text("\n".join(lines) + "\n")
    result = _register(case, tmp_path / "reg", "--landmarks", str(path))
    assert result.exit_code == 0, result.output
    assert ", ... (25 in all)" in result.output and "b19" in result.output
    record = json.loads((tmp_path / "reg" / "transform.json").read_text())
    assert len(record["landmarks"]["rejected"]) == 25


def test_a_transform_json_over_the_size_cap_is_refused(tmp_path, monkeypatch):
    import hybridfuse.fusion.coregister as co

    assert co.MAX_TRANSFORM_BYTES == 64 * 2**20  # the documented limit
    monkeypatch.setattr(co, "MAX_TRANSFORM_BYTES", 2**20)
    path = tmp_path / "t.json"
    path.write_text(" " * (2**20 + 1))
    with pytest.raises(InputError, match="larger than 1 MiB; not a transform file"):
        read_transform_json(path)


@pytest.mark.parametrize(
    ("matrix", "match"),
    [
        ([[1e-9, 0, 0], [0, 1e-9, 0], [0, 0, 1]], "scales the ultrasound field by 1e-09..1e-09"),
        ([[60, 0, 0], [0, 60, 0], [0, 0, 1]], "(plausible: 0.02..50)"),
        ([[1, 0, 0], [0, 1, 0], [0.01, 0, -2]], "puts its horizon across the ultrasound field"),
    ],
)
def test_an_implausible_start_is_refused_before_any_image_work(
    case, tmp_path, monkeypatch, matrix, match
):
    # A start of scale 1e-9 made the smoothing run for more than five minutes.
    import hybridfuse.registration.evidence as evidence

    def no_image_work(*args, **kwargs):
        raise AssertionError("structures were detected before the start was checked")

    monkeypatch.setattr(evidence, "detect_structures", no_image_work)
    start = tmp_path / "start.json"
    start.write_text(
        json.dumps({"schema": "hybridfuse.transform/1", "moving_to_fixed_pixel": matrix})
    )
    args = ["--init-transform", str(start), "--metric", "lc2"]
    result = _register(case, tmp_path / "reg", *args)
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert f"{start}: " in line and "the starting transform" in line and match in line


def test_landmarks_implying_an_implausible_scale_are_refused_with_a_metric(case, tmp_path):
    path = tmp_path / "tiny.csv"
    rows = [(180, 100), (450, 120), (430, 400), (190, 380), (300, 250)]
    path.write_text(HEADER + "\n" + "".join(
        f"p{i},{x},{y},{200 + x * 1e-3},{200 + y * 1e-3}\n" for i, (x, y) in enumerate(rows)
    ))  # fmt: skip
    result = _register(case, tmp_path / "reg", "--landmarks", str(path), "--metric", "lc2")
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert f"{path}: the landmark fit scales the ultrasound field" in line
