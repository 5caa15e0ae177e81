"""The README stays a front door, and no page of the documentation links to a file that is
not there (`make docs` builds the site with `--strict` too; this needs no build)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
# An inline link or image, `[text](target)` or `[text](target "title")`: the target is what
# follows the bracket up to a space or the closing parenthesis. Fenced code and code spans
# are taken out first, so that an example such as `d[k](x)` is not read as a link.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
# Anything with a scheme (https:, mailto:) or a leading slash is not a file of this checkout.
EXTERNAL = re.compile(r"^([a-z][a-z0-9+.-]*:|/)", re.I)


def relative_links(page: Path) -> list[str]:
    text = CODE_SPAN.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    return [t for t in LINK.findall(text) if not EXTERNAL.match(t) and not t.startswith("#")]


def test_the_readme_is_a_front_door_under_150_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 150, f"README.md has {len(lines)} lines: move sections into docs/"


def test_the_documentation_has_pages_with_links_to_check():
    assert len(PAGES) > 3
    assert relative_links(ROOT / "README.md")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_that_exists(page: Path):
    missing = []
    for target in relative_links(page):
        path = target.split("#", 1)[0].split("?", 1)[0]
        if not (page.parent / path).exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)} links to files that do not exist: {missing}"


def test_a_link_to_a_missing_file_is_found(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text(
        "[here](there.md#part), [site](https://example.org), [top](#top), "
        "`[not](a-link.md)`\n\n```\n[nor](this.md)\n```\n",
        encoding="utf-8",
    )
    assert relative_links(page) == ["there.md#part"]
