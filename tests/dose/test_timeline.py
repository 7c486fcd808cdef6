"""The timeline picture: a DAP scale, both cumulative lines when they differ, labelled intervals."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from hybridfuse.dose.timeline import _draw_cumulative, _draw_intervals  # noqa: E402

BARS = {"fluoroscopy": [(0.0, 2.0, 0.05), (10.0, 2.0, 0.04649)]}  # event sum 0.09649


@pytest.fixture
def axes():
    fig, ax = plt.subplots()
    yield ax, ax.twinx()
    plt.close(fig)


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_the_accumulated_total_is_drawn_beside_the_event_sum_when_they_differ(axes):
    _, ax2 = axes
    _draw_cumulative(ax2, BARS, 0.1093)  # Philips Allura: the total exceeds the event sum
    dashed = [ln for ln in ax2.lines if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_ydata()[0] == pytest.approx(0.1093)
    assert _texts(ax2) == ["event sum 0.09649 vs total 0.1093 Gy·cm²"]
    assert ax2.get_ylabel() == "cumulative DAP (Gy·cm²)"
    assert ax2.get_ylim()[1] > 0.1093  # the higher line is on the scale


def test_no_second_line_when_the_total_equals_the_event_sum(axes):
    _, ax2 = axes
    _draw_cumulative(ax2, BARS, 0.09649)
    assert not [ln for ln in ax2.lines if ln.get_linestyle() == "--"] and not ax2.texts


def test_each_ultrasound_interval_is_labelled_with_its_source(axes):
    ax, _ = axes
    _draw_intervals(
        ax,
        [
            {"start_s": 90.0, "end_s": 170.0, "source": "us_clip.dcm: first to last frame"},
            {"start_s": 180.0, "end_s": 190.0, "source": "given"},
        ],
    )
    assert _texts(ax) == ["ultrasound, clip us_clip.dcm", "ultrasound, given"]
