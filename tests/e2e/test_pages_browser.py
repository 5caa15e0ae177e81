"""Our pages in Debian's chromium (`tests/e2e/conftest.py`): the API documentation with no
network beyond loopback, and the OAuth pages' Chinese drawn with real glyphs.

The font check draws each Han character of a page's heading, in the heading's own font, on
a canvas, beside U+10FFFD (a private-use character no font has, drawn as the missing-glyph
box). Without a CJK font every one of them is that same box, so the bitmaps are equal; with
one, each character has its own shape. The same check in a browser whose fontconfig refuses
every font covering Chinese must find the boxes: the check can fail.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from flows.runtime import Runtime
from flows.settings import Settings
from idv.api import create_app
from tests.e2e.conftest import launch

pytestmark = pytest.mark.e2e

TOKEN = "pages-test-token-0123456789"
TOFU = "\U0010fffd"
# fontconfig as the machine has it, less every font that covers Chinese.
NO_CJK_FONTS = """<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig>
  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>
  <selectfont><rejectfont>
    <pattern><patelt name="lang"><string>zh-cn</string></patelt></pattern>
  </rejectfont></selectfont>
</fontconfig>
"""

# Each Han character of the element's text, and U+10FFFD, drawn alone in the element's font
# on a canvas: their bitmaps (as data URLs), and the rendered width of the Han run per
# character in em.
GLYPHS_JS = """(el) => {
  const style = getComputedStyle(el);
  const han = [...el.textContent].filter((c) => /\\p{Script=Han}/u.test(c));
  const canvas = document.createElement("canvas");
  canvas.width = 96; canvas.height = 96;
  const ctx = canvas.getContext("2d");
  const draw = (c) => {
    ctx.clearRect(0, 0, 96, 96);
    ctx.font = `${style.fontWeight} 64px ${style.fontFamily}`;
    ctx.fillText(c, 8, 72);
    return canvas.toDataURL();
  };
  const text = el.firstChild.textContent;
  const start = text.indexOf(han[0]);
  const range = document.createRange();
  range.setStart(el.firstChild, start);
  range.setEnd(el.firstChild, start + han.length);
  // The run may wrap: its width is the sum of its boxes on each line.
  const width = [...range.getClientRects()].reduce((sum, r) => sum + r.width, 0);
  const em = parseFloat(style.fontSize);
  return {han: han.join(""), tofu: draw("__TOFU__"), glyphs: han.map(draw),
          em_per_char: width / han.length / em};
}""".replace("__TOFU__", TOFU)


@pytest.fixture
def api(tmp_path, key_file, serve_app):
    rt = Runtime(Settings(home=tmp_path / "home", key_file=key_file, api_token=SecretStr(TOKEN)))
    server = serve_app(create_app(rt))
    yield server
    server.stop()
    rt.close()


def glyphs_of_heading(browser, url: str) -> dict:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url)
        assert page.evaluate("document.documentElement.lang") == "zh-CN"
        return page.eval_on_selector("h1", GLYPHS_JS)
    finally:
        context.close()


def test_when_an_oauth_page_is_shown_then_its_chinese_is_drawn_with_real_glyphs(
    api, chromium, playwright_driver, tmp_path
):
    # An error page: this installation has no WeChat configured.
    url = f"{api.url}/oauth/wechat/authorize?applicant_ref=A-1"
    shown = glyphs_of_heading(chromium, url)
    assert shown["han"] == "授权未完成"
    assert TOFU not in shown["han"]
    boxes = [i for i, g in enumerate(shown["glyphs"]) if g == shown["tofu"]]
    assert boxes == [], f"characters {boxes} of the heading are drawn as missing-glyph boxes"
    assert len(set(shown["glyphs"])) == len(shown["han"])  # five characters, five shapes
    assert 0.9 < shown["em_per_char"] < 1.1  # full-width ideographs, not narrow boxes

    # The same check where no font covers Chinese: every character is the box.
    config = tmp_path / "no-cjk-fonts.conf"
    config.write_text(NO_CJK_FONTS, encoding="utf-8")
    bare = launch(playwright_driver, env={"FONTCONFIG_FILE": str(config), "HOME": str(tmp_path)})
    try:
        boxed = glyphs_of_heading(bare, url)
    finally:
        bare.close()
    assert all(g == boxed["tofu"] for g in boxed["glyphs"])
    assert boxed["em_per_char"] < 0.9


def test_when_the_docs_are_opened_offline_then_swagger_ui_renders_the_operations(api, page):
    asked_elsewhere: list[str] = []

    def loopback_only(route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            asked_elsewhere.append(urlsplit(route.request.url).hostname or "?")
            route.abort()

    page.route("**/*", loopback_only)
    page.goto(f"{api.url}/docs")
    block = page.locator(".opblock").first
    block.wait_for(state="visible")
    assert page.locator(".opblock").count() >= 14
    assert page.locator(
        ".opblock-summary-path", has_text="/subjects/{applicant_ref}/consents"
    ).first.is_visible()
    assert asked_elsewhere == []

    page.goto(f"{api.url}/redoc")
    page.locator("h2", has_text="Decision").first.wait_for(state="visible")
    assert page.locator("h2").count() >= 14  # one heading per operation
    assert asked_elsewhere == []
