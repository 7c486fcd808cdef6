"""UIDs in dose outputs: keyed pseudonyms (as events.csv has them) unless --include-phi.

dose.json's ``inputs[].sop_instance_uid`` and a flag naming an irradiation event carried
the raw UIDs while events.csv pseudonymised them; a registry still finds a SOP Instance
UID reused by a different report when both dose.json files carry its pseudonym.
"""

from __future__ import annotations

import copy
import csv
import json
import re

import pydicom
import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.dose.rdsr import _walk
from hybridfuse.testdata import sample_case

PSEUDONYM = re.compile(r"(sop|event)-[0-9a-f]{16}")


def _dose(*args):
    res = CliRunner().invoke(cli, ["dose", *map(str, args)])
    assert res.exit_code == 0, res.output
    return res


def _written(folder) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def _code(item) -> str | None:
    seq = item.get("ConceptNameCodeSequence")
    return seq[0].CodeValue if seq else None


def _twice_recorded_dap(path):
    """The sample RDSR with its first event's DAP recorded twice (flagged by its event UID).

    Returns the event's UID and the file's SOP Instance UID.
    """
    ds = pydicom.dcmread(sample_case() / "rdsr.dcm")
    event = next(i for i in _walk(ds) if _code(i) == "113706")
    dap = next(c for c in event.ContentSequence if _code(c) == "122130")
    event.ContentSequence.append(copy.deepcopy(dap))
    uid = next(c for c in event.ContentSequence if _code(c) == "113769").UID
    ds.save_as(path)
    return str(uid), str(ds.SOPInstanceUID)


@pytest.mark.parametrize("phi", [False, True])
def test_dose_json_names_the_sr_and_its_events_by_pseudonym_unless_asked(tmp_path, phi):
    rdsr, out = tmp_path / "sr.dcm", tmp_path / "out"
    event_uid, sop_uid = _twice_recorded_dap(rdsr)
    _dose("report", "--rdsr", rdsr, "--out", out, *(["--include-phi"] if phi else []))
    dose = json.loads((out / "dose.json").read_text(encoding="utf-8"))
    with open(out / "events.csv", newline="", encoding="utf-8") as fh:
        first = next(csv.DictReader(fh))["event_uid"]  # the event's name in events.csv
    [flag] = [f for f in dose["flags"] if "recorded 2 times" in f]
    assert flag == f"event {first}: dap_gy_cm2 recorded 2 times; first kept"
    if phi:
        assert first == event_uid and dose["inputs"][0]["sop_instance_uid"] == sop_uid
    else:
        assert PSEUDONYM.fullmatch(first) and first.startswith("event-")
        sop = dose["inputs"][0]["sop_instance_uid"]
        assert PSEUDONYM.fullmatch(sop) and sop.startswith("sop-")
        written = _written(out)
        assert event_uid.encode() not in written and sop_uid.encode() not in written


@pytest.mark.parametrize("phi", [False, True])
def test_an_image_dose_report_pseudonymises_each_images_uid_unless_asked(tmp_path, phi):
    images = sorted(sample_case().glob("fluoro_run0*.dcm"))
    out = tmp_path / "out"
    args = [a for p in images for a in ("--images", p)]
    _dose("report", *args, "--out", out, *(["--include-phi"] if phi else []))
    dose = json.loads((out / "dose.json").read_text(encoding="utf-8"))
    uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in images]
    shown = [i["sop_instance_uid"] for i in dose["inputs"]]
    if phi:
        assert shown == uids
    else:
        assert all(PSEUDONYM.fullmatch(s) for s in shown) and len(set(shown)) == len(uids)
        assert not [u for u in uids if u.encode() in _written(out)]


def test_a_reused_sop_uid_is_a_conflict_between_two_dose_jsons_without_phi(tmp_path):
    """Both carry the UID's pseudonym under the user's key: the same UID, the same text."""
    other = tmp_path / "other.dcm"
    ds = pydicom.dcmread(sample_case() / "rdsr.dcm")
    ds.StudyInstanceUID = "1.2.3.4.5"  # another report, the same SOP Instance UID
    ds.save_as(other)
    _dose("report", "--rdsr", sample_case() / "rdsr.dcm", "--out", tmp_path / "a")
    _dose("report", "--rdsr", other, "--out", tmp_path / "b")
    a, b = (json.loads((tmp_path / x / "dose.json").read_text("utf-8")) for x in "ab")
    assert a["inputs"][0]["sop_instance_uid"] == b["inputs"][0]["sop_instance_uid"]
    db = tmp_path / "r.sqlite"
    _dose("ingest", tmp_path / "a" / "dose.json", "--db", db)  # neither RDSR beside it
    res = _dose("ingest", tmp_path / "b" / "dose.json", "--db", db, "--json")
    [row] = json.loads(res.output)
    assert "reused" in row["conflict"]
