"""The user documentation holds together: links resolve, the README stays a short guide.

Every relative link in README.md, docs/*.md and benchmarks/RESULTS.md must name a file
of the repository (and, with ``#anchor``, a heading of it); a moved or deleted page
otherwise leaves readers at a dead end that nothing else would notice.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md", *(ROOT / "docs").glob("*.md")]
)
README_MAX_LINES = 180

_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def links(text: str) -> list[str]:
    """Targets of the Markdown links in ``text``, outside code blocks and code spans."""
    text = _CODE.sub("", _FENCE.sub("", text))
    return _LINK.findall(text)


def anchors(text: str) -> set[str]:
    """GitHub's anchors of the headings of a Markdown page."""
    out = set()
    for line in _FENCE.sub("", text).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            title = m.group(1).strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def broken_links(page: Path) -> list[str]:
    """Each relative link of ``page`` that names no file, or no heading of that file."""
    text = page.read_text(encoding="utf-8")
    bad = []
    for target in links(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.is_file():
            bad.append(f"{target} (no file {dest.relative_to(ROOT)})")
        elif anchor and dest.suffix == ".md":
            if anchor not in anchors(dest.read_text(encoding="utf-8")):
                bad.append(f"{target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == [], f"{page.relative_to(ROOT)}: broken links"


def test_the_pages_link_where_they_should():
    """The README reaches every page of docs/ (directly), so none is orphaned."""
    readme = {Path(t.partition("#")[0]).name for t in links((ROOT / "README.md").read_text())}
    orphans = [p.name for p in (ROOT / "docs").glob("*.md") if p.name not in readme]
    # The hardening-* pages are reached from docs/hardening.md, which the README links.
    orphans = [name for name in orphans if not name.startswith("hardening-")]
    assert orphans == []


def test_readme_is_a_short_guide():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_readme_lists_every_dependency_with_its_reason():
    import tomllib  # Python 3.11+, as fusion/pipeline.py's config reading

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Dependencies", 1)[1].split("\n## ", 1)[0]
    listed = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in ("package", "---"):
            for name in cells[0].replace("(dev)", "").split(","):
                listed[re.split(r"[\[\s]", name.strip())[0].lower()] = cells[1]
    for requirement in wanted:
        name = re.split(r"[\[<>=!~;\s]", requirement)[0].lower()
        assert listed.get(name), f"README.md: dependency {name} has no row with its reason"
