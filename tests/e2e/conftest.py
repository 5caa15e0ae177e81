"""The browser the e2e tests drive: Debian's chromium through Playwright (STACK.md; `make
browser` installs it with a CJK font, `playwright install` is never used)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch(pw, **kw):
    """Debian's chromium, headless; `kw` for `launch` (an environment, say)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: run `make browser` (apt-get install chromium)")
    return pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True, **kw)


@pytest.fixture(scope="module")
def playwright_driver():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def chromium(playwright_driver):
    browser = launch(playwright_driver)
    yield browser
    browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context()
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()
