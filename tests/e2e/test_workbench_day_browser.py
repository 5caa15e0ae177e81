"""An analyst's day on the workbench in Debian's chromium, on a 1366x900 screen: "next case ->
decide -> next" measured in interactions (a key press, a click, or typing into one field
each count one; signing in and opening the queue do not). A close from the queue takes
three (n, the reason typed, Alt+1: closed as a false positive and the next case taken), by
keyboard or by mouse; the decision bar and its legend are on screen without scrolling on
every case page reached. The queue's own keys (j / k to move, o to open, / to search) are
driven too.

Screenshots go to `$IDV_TEST_ARTIFACTS` or `<repo>/.artifacts/` (`day-<step>.png`, the
viewport as the analyst sees it). Cookies are not `Secure`: plain http on loopback."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from flows.runtime import Runtime, Settings
from idv.api import create_app
from services.context import Actor
from tests.integration.test_cases import ID_CANARY, NAME_CANARY, PHONE_CANARY, flagged

pytestmark = pytest.mark.e2e

PASSWORD = "day-browser-password-0123"
ADMIN = Actor("admin", "operator")
SCREEN = {"width": 1366, "height": 900}
TARGET = 3  # interactions for next case -> close -> next, from the queue
ARTIFACTS = Path(
    os.environ.get("IDV_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / ".artifacts"
)
CASE_PAGE = re.compile(r".*/web/cases/[0-9a-f-]{36}(\?.*)?$")


class Interactions:
    """What the analyst does, counted: each key press, click or field typed into is one."""

    def __init__(self, page) -> None:
        self.page = page
        self.count = 0
        self.log: list[str] = []

    def press(self, key: str) -> None:
        self.count += 1
        self.log.append(f"press {key}")
        self.page.keyboard.press(key)

    def type(self, text: str) -> None:
        self.count += 1
        self.log.append("type the reason")
        self.page.keyboard.type(text)

    def click(self, locator, what: str) -> None:
        self.count += 1
        self.log.append(f"click {what}")
        locator.click()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # caret="initial": hiding the caret would inject a style sheet the page's CSP refuses.
    page.screenshot(path=str(ARTIFACTS / f"day-{name}.png"), caret="initial")


def on_screen_without_scrolling(page, testid: str) -> None:
    """The element is wholly inside the 1366x900 viewport, and the page was not scrolled."""
    assert page.evaluate("window.scrollY") == 0
    box = page.get_by_test_id(testid).bounding_box()
    assert box is not None, testid
    assert box["y"] >= 0 and box["y"] + box["height"] <= SCREEN["height"], (testid, box)
    assert box["x"] >= 0 and box["x"] + box["width"] <= SCREEN["width"], (testid, box)


def focused_on_reason(page) -> None:
    page.wait_for_function("document.activeElement && document.activeElement.id === 'reason'")


@pytest.fixture
def day(tmp_path, key_file, serve_app, database):
    rt = Runtime(
        Settings(
            home=tmp_path / "home",
            key_file=key_file,
            web_cookie_secure=False,
            database_url=database.url,
            database_schema=database.schema,
        )
    )
    people = rt.services.people
    people.add("admin", "operator", SecretStr(PASSWORD), actor=None)
    people.add("ana", "analyst", SecretStr(PASSWORD), actor=ADMIN)
    # Four flagged applicants, the most urgent first.
    cases = [
        flagged(rt, "DAY-1", reasons=("COURT_CONFIRMED_HIT", "ID_MISMATCH")),
        flagged(rt, "DAY-2", reasons=("ID_MISMATCH",)),
        flagged(rt, "DAY-3", reasons=("CARRIER_MISMATCH",)),
        flagged(rt, "DAY-4", reasons=("CREDIT_THIN_FILE",)),
    ]
    server = serve_app(create_app(rt))
    yield server.url, rt, cases
    server.stop()
    rt.close()


@pytest.fixture
def screen(chromium):
    context = chromium.new_context(viewport=SCREEN)
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def sign_in(page, url: str) -> None:
    page.goto(f"{url}/web/sign-in")
    page.get_by_label("用户名 Name").fill("ana")
    page.get_by_label("密码 Password").fill(PASSWORD)
    page.get_by_role("button", name="登录 Sign in").click()
    page.wait_for_url(f"{url}/web/")
    page.goto(f"{url}/web/cases")
    page.get_by_test_id("queue").wait_for()


def test_next_case_close_and_next_is_three_interactions_without_scrolling(day, screen):
    url, rt, cases = day
    page = screen
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(page, url)
    shot(page, "queue")

    # By keyboard: n, the reason, Alt+1 (close as a false positive, then the next case).
    did = Interactions(page)
    did.press("n")
    page.wait_for_url(CASE_PAGE)
    assert cases[0] in page.url
    on_screen_without_scrolling(page, "decision-bar")
    on_screen_without_scrolling(page, "legend")
    focused_on_reason(page)
    shot(page, "case-first")
    did.type("the court-list entry is another person of the same name")
    did.press("Alt+1")
    page.wait_for_url(re.compile(rf".*/web/cases/{cases[1]}\?done=next$"))
    assert did.count <= TARGET, did.log
    first = rt.store.cases.get(cases[0])
    assert (first.status, first.disposition, first.resolution) == (
        "closed",
        "false_positive",
        "close",
    )
    assert rt.store.cases.get(cases[1]).claimed_by == "ana"  # the next one, taken
    on_screen_without_scrolling(page, "decision-bar")
    focused_on_reason(page)
    shot(page, "case-next")

    # By mouse from the queue: the same three (Next case, the reason, the close button).
    page.goto(f"{url}/web/cases")
    rt.services.cases.release(cases[1], actor=Actor("ana", "analyst"))
    mouse = Interactions(page)
    mouse.click(page.get_by_role("button", name="下一个案件 Next case"), "next case")
    page.wait_for_url(CASE_PAGE)
    assert cases[1] in page.url
    on_screen_without_scrolling(page, "decision-bar")
    focused_on_reason(page)
    mouse.type("the ID document the applicant sent matches the file")
    mouse.click(
        page.get_by_test_id("decision-bar").get_by_role("button", name="误报 false positive"),
        "close as a false positive",
    )
    page.wait_for_url(re.compile(rf".*/web/cases/{cases[2]}\?done=next$"))
    assert mouse.count <= TARGET, mouse.log
    assert rt.store.cases.get(cases[1]).disposition == "false_positive"
    # From a case page the next close is two: the reason and the button.
    on_screen_without_scrolling(page, "decision-bar")
    html = page.content()
    assert not [v for v in (ID_CANARY, PHONE_CANARY, NAME_CANARY) if v in html]
    print(  # the figure the issue asks for, in the test output (-s)
        f"next case -> close -> next: {did.count} interactions by keyboard ({', '.join(did.log)}), "
        f"{mouse.count} by mouse ({', '.join(mouse.log)}); target {TARGET}, no scroll at 1366x900"
    )
    assert not errors, errors


def test_the_queue_answers_j_k_o_and_slash_and_a_key_without_a_reason_asks_for_one(day, screen):
    url, rt, cases = day
    page = screen
    sign_in(page, url)
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    assert page.locator("tr.current").get_attribute("data-case") == cases[0]
    page.keyboard.press("o")
    page.wait_for_url(re.compile(rf".*/web/cases/{cases[0]}$"))
    page.go_back()
    page.get_by_test_id("queue").wait_for()
    page.keyboard.press("/")
    page.keyboard.type("DAY-3")
    page.keyboard.press("Enter")
    page.wait_for_url("**q=DAY-3")
    assert page.locator("tr[data-case]").count() == 1
    assert page.locator("tr[data-ref='DAY-3']").count() == 1
    # A decision key with no reason typed: nothing is sent, the reason box asks for one.
    page.goto(f"{url}/web/cases")
    page.keyboard.press("n")
    page.wait_for_url(CASE_PAGE)
    page.locator("#reason").blur()
    page.keyboard.press("a")
    focused_on_reason(page)
    assert page.evaluate("document.getElementById('reason').validity.valueMissing")
    assert [c.status for c in map(rt.store.cases.get, cases)] == ["open"] * 4


def test_the_queue_shows_a_screenful_of_cases_without_scrolling(day, screen):
    """A day's queue on a 1366x900 screen: at least 12 cases in view at once (a walk of the
    first workbench found 4 or 5), each row wholly on screen."""
    url, rt, _ = day
    for i in range(5, 31):
        flagged(rt, f"DAY-{i}", reasons=("ID_MISMATCH", "CARRIER_MISMATCH"))
    page = screen
    sign_in(page, url)
    shot(page, "queue-screenful")
    assert page.evaluate("window.scrollY") == 0
    boxes = [r.bounding_box() for r in page.locator("tr[data-case]").all()]
    in_view = [
        b
        for b in boxes
        if b is not None and b["y"] >= 0 and b["y"] + b["height"] <= SCREEN["height"]
    ]
    assert len(boxes) == 30 and len(in_view) >= 12, (len(boxes), len(in_view))
