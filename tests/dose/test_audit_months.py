"""The audit over months and its patient data: relative months by default, calendar
months and outliers' accession numbers and study dates only with --include-phi."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import sqlite3

import pydicom
import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.dose.registry import Registry
from hybridfuse.testdata import sample_case
from tests.dose.rdsr_edit import shift_datetimes

# The sample RDSR: study 2026-01-15, accession HF000001, patient SYN000001.
DRL = "procedure,region,dap_gy_cm2,ka_r_mgy,fluoro_time_s,source\nmbb,lumbar,0.001,,,test\n"


def _rdsr(tmp_path, days: int, accession: str, patient: str):
    """The sample RDSR moved ``days`` days later, of another study and patient."""
    ds = pydicom.dcmread(sample_case() / "rdsr.dcm")
    shift_datetimes(ds.ContentSequence, days)
    date = dt.date(2026, 1, 15) + dt.timedelta(days=days)
    ds.StudyDate = ds.ContentDate = f"{date:%Y%m%d}"
    ds.AccessionNumber, ds.PatientID = accession, patient
    ds.SOPInstanceUID = ds.StudyInstanceUID = pydicom.uid.generate_uid()
    path = tmp_path / f"report_{patient}.dcm"
    ds.save_as(path)
    return path


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Three patients: January, February and April 2026 (months +0, +1, +3)."""
    tmp = tmp_path_factory.mktemp("months")
    return [_rdsr(tmp, days, f"ACC-{i}", f"PAT{i}") for i, days in enumerate((0, 31, 90), start=1)]


def _ingest(db, files, *extra):
    args = ["dose", "ingest", *map(str, files), "--db", str(db), "--procedure", "mbb"]
    res = CliRunner().invoke(cli, [*args, "--region", "lumbar", "--json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def _audit(db, out, *extra):
    drl = out.parent / "drl.csv"
    drl.write_text(DRL)
    args = ["dose", "audit", "--db", str(db), "--drl", str(drl), "--out", str(out), *extra]
    return CliRunner().invoke(cli, args)


def _outputs(out) -> str:
    """Every output's text, the pictures' base64 left out (it can hold any letters)."""
    text = "".join(p.read_text(encoding="utf-8") for p in out.iterdir() if p.suffix != "")
    return re.sub(r"base64,[A-Za-z0-9+/=]+", "", text)


PHI = ("ACC-1", "ACC-2", "ACC-3", "2026-01", "2026-02", "2026-04", "20260115")


def test_without_phi_months_are_relative_across_patients_and_nothing_identifies(reports, tmp_path):
    db = tmp_path / "r.sqlite"
    _ingest(db, reports)
    raw = db.read_bytes()
    assert not any(s.encode() in raw for s in ("ACC-1", "ACC-2", "ACC-3"))
    # Dates are stored shifted back by each patient's keyed offset of 1-3653 days, so a
    # stored date may fall in any month, a real one included (the raw bytes cannot be
    # searched for months): each is its real date moved by its patient's own offset.
    reg = Registry(db, create=False)
    stored = dict(reg.db.execute("SELECT id, start FROM procedures"))
    shifts = [reg.date_shift(f"PAT{i}") for i in (1, 2, 3)]
    reg.db.close()
    assert all(s >= dt.timedelta(days=1) for s in shifts)
    for i, (days, shift) in enumerate(zip((0, 31, 90), shifts, strict=True), start=1):
        start = dt.datetime.fromisoformat(stored[i])
        assert (start + shift).date() == dt.date(2026, 1, 15) + dt.timedelta(days=days)
    res = _audit(db, tmp_path / "a")
    assert res.exit_code == 0, res.output
    audit = json.loads((tmp_path / "a" / "audit.json").read_text())
    monthly = audit["monthly"]
    assert monthly["available"] and monthly["months"] == "relative"
    # Each patient's dates are shifted by a different amount, yet the months keep
    # their real distances: January, February, April.
    assert [r["month"] for r in monthly["rows"]] == ["month +0", "month +1", "month +3"]
    assert [r["months_from_first"] for r in monthly["rows"]] == [0, 1, 3]
    assert all(r["cohort"] == "fluoroscopy-only" and r["n"] == 1 for r in monthly["rows"])
    assert "no calendar month" in monthly["note"]
    assert audit["outliers"] and all("accession_number" not in o for o in audit["outliers"])
    text = _outputs(tmp_path / "a")
    assert "month +3" in (tmp_path / "a" / "monthly.csv").read_text()
    assert "Over time (monthly)" in text
    assert not [s for s in PHI if s in text]


def test_with_phi_calendar_months_and_outliers_by_accession_and_date(reports, tmp_path):
    db = tmp_path / "r.sqlite"
    _ingest(db, reports, "--include-phi")
    res = _audit(db, tmp_path / "plain")
    assert res.exit_code == 0  # kept in the registry, still absent without the flag
    assert not [s for s in PHI[:6] if s in _outputs(tmp_path / "plain")]
    assert (
        "shown only with --include-phi"
        in json.loads((tmp_path / "plain" / "audit.json").read_text())["monthly"]["note"]
    )
    res = _audit(db, tmp_path / "phi", "--include-phi")
    assert res.exit_code == 0, res.output
    audit = json.loads((tmp_path / "phi" / "audit.json").read_text())
    assert audit["monthly"]["months"] == "calendar"
    assert [r["month"] for r in audit["monthly"]["rows"]] == ["2026-01", "2026-02", "2026-04"]
    found = {(o["accession_number"], o["study_date"]) for o in audit["outliers"]}
    assert found == {("ACC-1", "2026-01-15"), ("ACC-2", "2026-02-15"), ("ACC-3", "2026-04-15")}
    page = (tmp_path / "phi" / "audit.html").read_text()
    assert "ACC-3" in page and "2026-04-15" in page and "Contains patient data" in page


def test_phi_for_some_procedures_only_shows_pseudonyms_and_relative_months(reports, tmp_path):
    db = tmp_path / "r.sqlite"
    _ingest(db, reports[:2], "--include-phi")
    _ingest(db, reports[2:])
    res = _audit(db, tmp_path / "a", "--include-phi")
    assert res.exit_code == 0, res.output
    audit = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert audit["monthly"]["months"] == "relative"
    assert (
        "1 of 3 dated procedure(s) were ingested without --include-phi"
        in (audit["monthly"]["note"])
    )
    [bare] = [o for o in audit["outliers"] if o["accession_number"] is None]
    assert bare["pseudonym"] and bare["study_date"] is None
    assert any("shown by pseudonym" in f for f in audit["flags"])
    assert "not kept" in (tmp_path / "a" / "audit.html").read_text()


def test_include_phi_is_refused_when_the_registry_keeps_none(reports, tmp_path):
    db = tmp_path / "r.sqlite"
    _ingest(db, reports)
    res = _audit(db, tmp_path / "a", "--include-phi")
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()) == 1
    assert "--include-phi" in res.output and "keeps no accession number" in res.output
    assert not (tmp_path / "a").exists()


def _drop_added_columns(db) -> None:
    """Make the registry look like one written before months were kept."""
    con = sqlite3.connect(db)
    for column in ("month_relative", "month_real", "accession_number", "study_date"):
        con.execute(f"ALTER TABLE procedures DROP COLUMN {column}")
    con.commit()
    con.close()


def test_an_older_registry_audits_without_months_then_reingesting_fills_them(reports, tmp_path):
    db = tmp_path / "r.sqlite"
    _ingest(db, reports)
    _drop_added_columns(db)
    res = _audit(db, tmp_path / "a")
    assert res.exit_code == 0, res.output
    monthly = json.loads((tmp_path / "a" / "audit.json").read_text())["monthly"]
    assert not monthly["available"] and "predates the column(s)" in monthly["reason"]
    assert "No monthly view: r.sqlite predates" in (tmp_path / "a" / "audit.html").read_text()
    assert _audit(db, tmp_path / "b", "--include-phi").exit_code == 2
    reg = Registry(db, create=False)
    assert "month_relative" not in reg.columns  # an audit changes nothing
    reg.close()
    # The next ingest adds the columns; the same reports again fill them in.
    results = _ingest(db, reports, "--include-phi")
    assert all(r["status"].startswith("already ingested; added relative month") for r in results)
    assert "accession number" in results[0]["status"]
    res = _audit(db, tmp_path / "c", "--include-phi")
    assert res.exit_code == 0, res.output
    monthly = json.loads((tmp_path / "c" / "audit.json").read_text())["monthly"]
    assert monthly["months"] == "calendar"
    assert _ingest(db, reports)[0]["status"] == "already ingested"  # nothing left to fill


def test_a_dose_json_without_its_rdsr_says_it_keeps_no_month_or_identifiers(reports, tmp_path):
    from hybridfuse.dose.report import build_dose_report, write_dose_outputs

    write_dose_outputs(build_dose_report(reports[0]), tmp_path / "d")
    [res] = _ingest(tmp_path / "r.sqlite", [tmp_path / "d" / "dose.json"], "--include-phi")
    assert res["status"] == "ingested (its RDSR not found: no month, accession number or date)"
    shutil.copy(reports[0], tmp_path / "d")  # found beside it by its recorded name
    [res] = _ingest(tmp_path / "r2.sqlite", [tmp_path / "d" / "dose.json"], "--include-phi")
    assert res["status"] == "ingested"
    reg = Registry(tmp_path / "r2.sqlite", create=False)
    row = reg.rows()[0]
    reg.close()
    assert (row["accession_number"], row["month_real"]) == ("ACC-1", "2026-01")


def test_without_event_times_the_month_comes_from_the_study_date(reports, tmp_path):
    from hybridfuse.dose.monthly import month_index, month_shift
    from hybridfuse.dose.report import build_dose_report

    rep = build_dose_report(reports[2])
    rep["_study_date"] = dt.date(2026, 4, 15)  # a radiation summary: totals, no events
    reg = Registry(tmp_path / "r.sqlite")
    reg.ingest(rep, [], phi={"accession_number": "ACC-3", "study_date": rep["_study_date"]})
    [row] = reg.rows()
    assert row["month_real"] == "2026-04" and row["study_date"] == "2026-04-15"
    assert row["month_relative"] == month_index(dt.date(2026, 4, 1)) - month_shift(reg._key)
    reg.close()
