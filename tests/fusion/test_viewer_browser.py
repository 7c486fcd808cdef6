"""viewer.html in a real browser: Debian's chromium, headless, driven by selenium."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--allow-file-access-from-files",
        f"--user-data-dir={tmp_path_factory.mktemp('chrome')}",
        "--window-size=900,800",
    ):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield drv
    drv.quit()


def _pixel(drv, x, y):
    return drv.execute_script(
        "return Array.from(document.getElementById('view').getContext('2d')"
        ".getImageData(arguments[0], arguments[1], 1, 1).data);",
        x,
        y,
    )


def _set(drv, element_id, value):
    drv.execute_script(
        "const e = document.getElementById(arguments[0]); e.value = arguments[1];"
        "e.dispatchEvent(new Event(arguments[2]));",
        element_id,
        value,
        "change" if element_id in ("mode",) else "input",
    )


def test_viewer_blends_scrubs_and_plays_from_a_file_url(browser, fused):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    out, summary, truth, pair, fixed, moving = fused
    browser.get((out / "viewer.html").as_uri())
    WebDriverWait(browser, 20).until(
        lambda d: d.execute_script("return window.viewerState && window.viewerState.ready")
    )
    assert "NOT FOR DIAGNOSTIC USE" in browser.find_element(By.ID, "banner").text

    tip = next(lm for lm in pair["landmarks"] if lm["name"] == "needle_tip")
    x, y = (int(round(v)) - 6 for v in tip["fixed_xy"])  # beside the tip, inside the layer
    _set(browser, "opacity", 0)
    p0 = _pixel(browser, x, y)[0]
    _set(browser, "opacity", 100)
    p1 = _pixel(browser, x, y)[0]
    _set(browser, "opacity", 50)
    p_half = _pixel(browser, x, y)[0]
    assert p0 != p1
    assert abs(p_half - (p0 + p1) / 2) <= 2  # the canvas blends as the formula says

    before = browser.execute_script("return window.viewerState.draws")
    _set(browser, "frame", 3)
    state = browser.execute_script("return window.viewerState")
    assert state["frame"] == 3 and state["draws"] > before
    assert "frame 4/" in browser.find_element(By.ID, "info").text
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
    assert browser.execute_script("return window.viewerState.frame") == 2

    _set(browser, "mode", "checkerboard")
    assert browser.execute_script("return window.viewerState.mode") == "checkerboard"
    browser.find_element(By.ID, "landmarks").click()
    assert browser.execute_script("return window.viewerState.landmarks") is True

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "viewer.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    assert np.isfinite(p_half)
