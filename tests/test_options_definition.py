"""hybridfuse._options: one definition of each option, read by CLI, TOML and library."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hybridfuse._options import OptionError, build, flat, group, option, parse_text, specs


@dataclass(frozen=True)
class _Inner:
    step_mm: float = option(3.5, "Grid step.", minimum=0.1)
    scales: tuple[float, ...] = option((0.9, 1.0), "Candidate scales.")
    pair: tuple[float, float] | None = option((2.0, 10.0), "A pair, or none.")


@dataclass(frozen=True)
class _Outer:
    model: str = option("affine", "Model.", choices=("rigid", "affine"))
    search: bool | None = option(None, "Search.")
    count: int = option(4, "Count.", minimum=1, advanced=True)
    inner: _Inner = group(_Inner)


def test_specs_walk_groups_in_order_with_flat_names():
    names = [s.name for s in specs(_Outer)]
    assert names == ["model", "search", "count", "step_mm", "scales", "pair"]
    by = {s.name: s for s in specs(_Outer)}
    assert by["step_mm"].path == ("inner", "step_mm") and by["step_mm"].flag == "--step-mm"
    assert by["search"].optional and not by["model"].optional and by["count"].advanced


def test_build_sets_nested_values_and_flat_reads_them_back():
    o = build(_Outer, {"model": "rigid", "step_mm": 2, "scales": [1.0], "pair": None})
    assert o.inner.step_mm == 2.0 and o.inner.scales == (1.0,) and o.inner.pair is None
    assert flat(o) == {
        "model": "rigid",
        "search": None,
        "count": 4,
        "step_mm": 2.0,
        "scales": [1.0],
        "pair": None,
    }
    assert build(_Outer, {"count": 7}, base=o).inner.step_mm == 2.0  # base kept


@pytest.mark.parametrize(
    ("values", "said"),
    [
        ({"modle": "rigid"}, "unknown option(s) 'modle'"),
        ({"model": "bspline"}, "expected one of rigid, affine"),
        ({"count": 0}, "below the minimum 1"),
        ({"count": 2.5}, "expected a whole number"),
        ({"count": True}, "expected a whole number"),
        ({"search": "yes"}, "expected true or false"),
        ({"step_mm": float("nan")}, "expected a finite number"),
        ({"pair": [1.0]}, "expected 2 values"),
        ({"scales": []}, "at least one value"),
        ({"model": None}, "may not be empty"),
    ],
)
def test_build_refuses_what_the_definition_does_not_allow(values, said):
    with pytest.raises(OptionError, match="^cfg.toml: ") as err:
        build(_Outer, values, source="cfg.toml")
    assert said in str(err.value)


def test_parse_text_reads_command_line_strings():
    by = {s.name: s for s in specs(_Outer)}
    assert parse_text(by["pair"], "none") is None
    assert parse_text(by["scales"], "0.9,1.1") == (0.9, 1.1)
    assert parse_text(by["search"], "auto") is None and parse_text(by["search"], "off") is False
    assert parse_text(by["count"], "3") == 3
    with pytest.raises(OptionError, match="--count 'x'"):
        parse_text(by["count"], "x")
