"""report.html a physicist can sign: assumptions with their values, human labels, no noise."""

from __future__ import annotations

import csv
import hashlib
import re
import shutil

import pytest
from click.testing import CliRunner

from hybridfuse.cli.main import cli
from hybridfuse.dose.labels import number, relative
from hybridfuse.dose.rdsr import read_rdsr
from hybridfuse.dose.report import build_dose_report, write_dose_outputs
from hybridfuse.dose.saved import DAP_METER_TOLERANCE
from hybridfuse.dose.timeline import event_bars, non_additive_types
from hybridfuse.testdata import sample_case
from tests.conftest import REALDATA, dose_report_of

CANON = REALDATA / "rdsr" / "openrem__RF-RDSR-Canon-Alphenix-rotational.dcm"
PHILIPS = REALDATA / "rdsr" / "pyskindose__philips_allura_clarity_u601.dcm"
needs_realdata = pytest.mark.skipif(not CANON.is_file(), reason="shared/realdata not present")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    case = sample_case()
    out = tmp_path_factory.mktemp("html")
    rep = build_dose_report(
        case / "rdsr.dcm",
        us_clips=[case / "us_clip.dcm"],
        procedure="lumbar-mbb",
        region="lumbar",
    )
    write_dose_outputs(rep, out)
    return out / "report.html"


def test_the_page_states_each_assumption_with_its_value(page):
    text = page.read_text(encoding="utf-8")
    assert f"±{100 * DAP_METER_TOLERANCE:.0f} %" in text and "±35 %" in text
    assert "IEC 60580" in text
    assert "within a factor 2 of pulses / pulse rate" in text  # beam-on rule
    assert "&gt;= 3 fluoroscopy taps with &lt; 15 s" in text  # guided-phase rule
    assert "50 %-100 %" in text  # needle advance share of a clip
    assert "duty cycle 20 %" in text and "uniform 10 %-35 %" in text  # default protocol
    assert "20,000 samples, seed 0" in text
    assert "66-76 %" in text  # when table transmission applies
    # Why the guided time (60 s) is not the clip's span (80 s).
    assert "span 80 s × 75 % = 60 s guided" in text
    for section in ("flags", "timeline", "delivered", "reconciliation", "saved", "methods"):
        assert f'<section id="{section}"' in text


def test_the_page_has_human_labels_and_no_float_noise(page):
    text = re.sub(r'src="data:[^"]+"', "", page.read_text(encoding="utf-8"))
    assert "DAP, total (Gy·cm²)" in text and "Fluoroscopy time (s)" in text
    for field in ("dap_total_gy_cm2", "ka_r_total_mgy", "fluoro_time_s", "None"):
        assert field not in text, field
    assert not re.search(r"\d\.\d{6,}", text)
    assert not re.search(r"\de[-+]\d", text)
    # Rounding noise of a difference (2.2e-16) is shown as 0, not as "-2.22 × 10⁻¹⁶".
    assert "× 10⁻¹" not in text


def test_number_formats_to_its_precision():
    assert number(0.44210000000000005) == "0.4421"
    assert number(1.2e-5) == "1.2 × 10⁻⁵"
    assert number(-1e-17 + 0.0) == "-1 × 10⁻¹⁷"
    assert number(None) == "unknown"
    assert relative(-1.73e-16) == "0 %"
    assert relative(95.0) == "event sum 96 × the total"
    assert relative(0.117) == "+11.7 %"


@needs_realdata
def test_huge_reconciliation_differences_read_as_ratios(tmp_path):
    write_dose_outputs(dose_report_of(CANON), tmp_path)
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    recon = text.split('<section id="reconciliation"')[1].split("</section>")[0]
    assert "event sum 96 × the total" in recon
    assert "e+03" not in recon and "9497" not in recon
    flags = text.split('<section id="flags"')[1].split("</section>")[0]
    assert "Fluoroscopy time (s) event sum" in flags and "fluoro_time_s" not in flags


@needs_realdata
def test_events_csv_carries_no_conversion_noise(tmp_path):
    for path in (CANON, PHILIPS):
        write_dose_outputs(dose_report_of(path), tmp_path / path.stem)
        with open(tmp_path / path.stem / "events.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                for key in ("dap_gy_cm2", "dose_rp_mgy", "field_area_cm2"):
                    digits = re.sub(r"[^0-9]", "", row[key].split("e")[0]).strip("0")
                    assert len(digits) <= 12, (path.name, key, row[key])


@needs_realdata
def test_timeline_widths_are_beam_on_where_durations_are_not_additive():
    rep = dose_report_of(CANON)
    kinds = non_additive_types(rep["reconciliation"])
    assert "fluoroscopy" in kinds
    rec = read_rdsr(CANON)
    t0 = min(e.start for e in rec.events)
    widths = [w for _, w, _ in event_bars(rec.events, t0, kinds)["fluoroscopy"]]
    durations = [e.duration_s for e in rec.events if e.event_type == "fluoroscopy"]
    # Canon's Irradiation Duration (80.7 s for 7 pulses) is not drawn as beam time.
    assert max(widths) < 20 < max(durations)
    first = sorted((e for e in rec.events if e.event_type == "fluoroscopy"), key=lambda e: e.start)
    assert widths[0] == pytest.approx(first[0].number_of_pulses / first[0].pulse_rate_per_s)
    assert not non_additive_types(dose_report_of(PHILIPS)["reconciliation"])


def test_images_write_the_same_report_and_refuse_ultrasound(tmp_path):
    case = sample_case()
    runs = sorted(case.glob("fluoro_run0*.dcm"))
    args = ["dose", "report", *(a for r in runs for a in ("--images", str(r)))]
    res = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "a" / "report.html").read_text(encoding="utf-8")
    assert '<section id="methods"' in text and "a lower bound" in text
    sha = hashlib.sha256(runs[0].read_bytes()).hexdigest()
    assert f"image 1 (sha256 {sha[:12]})" in text and runs[0].name not in text  # no name
    res = CliRunner().invoke(
        cli,
        ["dose", "report", "--images", str(case / "us_clip.dcm"), "--out", str(tmp_path / "b")],
    )
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()) == 1 and "not a projection X-ray" in res.output
    assert not (tmp_path / "b").exists()


def _chromium():
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium not installed (pip install -e .[dev])"
    )
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not shutil.os.path.exists(driver_path):
        pytest.skip("no chromedriver on this machine: Chromium rendering not checked")
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(service=Service(driver_path), options=opts)


def test_chromium_renders_the_sections_and_prints(page):
    driver = _chromium()
    try:
        driver.get(page.as_uri())
        headings = [h.text for h in driver.find_elements("css selector", "h2")]
        for title in ("Check first", "Timeline", "Delivered", "Dose saved", "Methods"):
            assert any(h.startswith(title) for h in headings), (title, headings)
        img = driver.find_element("css selector", "#timeline img")
        assert driver.execute_script("return arguments[0].naturalWidth", img) > 0
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
        methods = driver.find_element("css selector", "#methods")
        assert methods.value_of_css_property("break-before") == "page"
        pdf = driver.print_page()
        assert pdf.startswith("JVBER")  # base64 of "%PDF"
    finally:
        driver.quit()
