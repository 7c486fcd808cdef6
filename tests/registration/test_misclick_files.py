"""The mis-click files of benchmarks/misclick_files.py: one wrong click each, of each kind."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.misclick_files import BLOB_MM, TIP_PX, wrong_sets


def test_each_file_moves_one_click_by_the_stated_amount(family_case_of):
    case = family_case_of(12, 512)  # four beads and a needle tip
    truth = json.loads((case / "truth.json").read_text())
    mm = truth["mm_per_fixed_pixel_at_isocenter"]
    rows, sets = wrong_sets(case, 12)
    placed = {i: np.array([float(r[3]), float(r[4])]) for i, r in enumerate(rows) if i}
    kinds = {"blob": 0, "bead": 0, "tip": 0}
    for label, index, xy in sets:
        off = np.linalg.norm(xy - placed[index])
        if "blob" in label:
            kinds["blob"] += 1
            assert BLOB_MM[0] < off * mm < BLOB_MM[1], (label, off * mm)
        elif label.startswith("needle"):
            kinds["tip"] += 1
            assert TIP_PX[0] <= off <= TIP_PX[1], (label, off)
        else:  # on another bead's click, 0.5 px from it
            kinds["bead"] += 1
            other = rows.index(next(r for r in rows if r[0] == label.split(" on ")[1]))
            assert np.linalg.norm(xy - placed[other]) < 2.5 and off * mm > 2.0, label
    assert kinds["bead"] == 4 and kinds["tip"] == 1 and kinds["blob"] >= 2, kinds


def test_the_files_off_the_same_way_move_every_click_alike(family_case_of):
    from benchmarks.misclick_files import SCALE, SHIFT_PX, systematic_sets

    case = family_case_of(12, 512)
    rows, _ = wrong_sets(case, 12)
    placed = np.array([[float(r[3]), float(r[4])] for r in rows[1:]])
    sets = systematic_sets(rows, 12)
    assert len(sets) == len(SHIFT_PX) + len(SCALE)
    for label, wrong in sets:
        moved = np.array([[float(r[3]), float(r[4])] for r in wrong[1:]]) - placed
        np.testing.assert_array_equal([r[:3] for r in wrong], [r[:3] for r in rows])
        if "shifted" in label:  # one vector for every click, of the stated length
            assert np.ptp(moved, axis=0).max() < 0.02
            assert abs(np.linalg.norm(moved[0]) - float(label.split()[2])) < 0.02
        else:  # about the centroid, which stays
            assert np.abs(moved.mean(axis=0)).max() < 0.02 and np.abs(moved).max() > 1.0


def test_the_files_resized_along_one_axis_leave_the_other_as_clicked(family_case_of):
    from benchmarks.misclick_files import AXIS_SCALE, axis_sets

    case = family_case_of(12, 512)
    rows, _ = wrong_sets(case, 12)
    placed = np.array([[float(r[3]), float(r[4])] for r in rows[1:]])
    sets = axis_sets(rows)
    assert [label for label, _ in sets] == [f"x scaled {AXIS_SCALE:g}", f"y scaled {AXIS_SCALE:g}"]
    for axis, (_, wrong) in enumerate(sets):
        moved = np.array([[float(r[3]), float(r[4])] for r in wrong[1:]])
        np.testing.assert_allclose(moved[:, 1 - axis], placed[:, 1 - axis], atol=0.006)
        rel = placed[:, axis] - placed[:, axis].mean()
        np.testing.assert_allclose(
            moved[:, axis] - placed[:, axis].mean(), AXIS_SCALE * rel, atol=0.006
        )
