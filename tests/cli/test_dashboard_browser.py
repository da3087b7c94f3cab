"""The dashboard in a real headless Chromium (Debian's chromium + chromium-driver, driven
by selenium): the page loads, a live event arrives, an escalation is answered through
the form, agent-controlled text stays text, and a screenshot is kept in test-artifacts/.

Locally a missing browser skips; under CI=true it fails (.ci/run installs it)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import events as ev
from app.dashboard import serve
from tests.cli.conftest import System
from tests.cli.sample import MON, W, raised, scenario
from tests.conftest import IN_CI, wait_until

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TOKEN = "browser-test-token"
XSS = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason}; CI=true requires it (apt-get install chromium chromium-driver)")
    pytest.skip(reason)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        _missing(f"no headless browser ({CHROMIUM}, {CHROMEDRIVER})")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1440,1500",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    # An explicit driver path: selenium never tries to download one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def dashboard(system: System) -> Iterator[str]:
    system.bus.publish_many(
        [*scenario(), raised("e-xss001", task_id="UI-2").model_copy(update={"question": XSS})]
    )
    stop = threading.Event()
    urls: list[str] = []
    thread = threading.Thread(
        target=serve, args=(system.bus, "127.0.0.1", 0, TOKEN, stop, urls.append)
    )
    thread.start()
    try:
        yield wait_until(lambda: urls and urls[0])
    finally:
        stop.set()
        thread.join(timeout=15)


def test_dashboard_in_chromium(system: System, dashboard: str, browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import Select

    assert isinstance(browser, WebDriver)
    driver = browser
    driver.get(f"{dashboard}#token={TOKEN}")

    def text(css: str) -> str:
        return "\n".join(el.text for el in driver.find_elements(By.CSS_SELECTOR, css))

    # The page shows loops, tasks, evidence, escalations, the merge queue and cost.
    wait_until(lambda: "loop-api" in text("#loops") and "e-1a2b3c" in text("#escalations"))
    assert driver.find_element(By.ID, "live-text").text in ("live", "connecting…")
    wait_until(lambda: driver.find_element(By.ID, "live-text").text == "live")
    assert "#token" not in driver.current_url  # the token left the address bar
    assert "API-1" in text("#loops") and "merged" in text("#loops")
    assert "$0.42" in text("#totals")
    assert "UI-1" in text("#merges") and "merging" in text("#merges")
    assert "same failure 3 times" in text("#monitor")
    ui2 = driver.find_element(
        By.CSS_SELECTOR, "article[data-loop='loop-ui'] tr[data-task='UI-2'] details"
    )
    ui2.find_element(By.TAG_NAME, "summary").click()
    wait_until(lambda: "<script>alert('x')</script> is escaped" in ui2.text)
    assert "AssertionError: <b>boom</b>" in ui2.text

    # Agent-controlled text is shown as text, never run as markup.
    xss_card = driver.find_element(By.CSS_SELECTOR, ".esc[data-id='e-xss001'] .question")
    assert xss_card.text == XSS
    assert driver.title == "coding-loops dashboard"
    assert driver.find_elements(By.CSS_SELECTOR, "#escalations img, #escalations script") == []

    # A live event arrives without a reload.
    system.bus.publish(
        ev.MonitorAction(
            source=MON,
            loop="loop-api",
            action=ev.MonitorActionKind.RESTART_WORKER,
            rule="stale_heartbeat",
            reason="no heartbeat for 3 intervals",
            incident_id="inc-live",
        )
    )
    wait_until(lambda: "monitor.action" in text("#feed li:first-child"))
    assert "no heartbeat for 3 intervals" in text("#feed li:first-child")
    wait_until(lambda: "no heartbeat for 3 intervals" in text("#monitor"))

    # Spend: the merged task's receipt in a table, and a line per loop in the chart,
    # which grows when a loop's next call of known cost arrives.
    receipt = driver.find_element(By.CSS_SELECTOR, "#spend table.receipts tbody tr")
    assert receipt.text.split()[:3] == ["loop-api", "API-1", "$0.42"]
    assert "$0.42 per merged task" in text("#spend .spend-summary")
    lines = "#spend svg.spend-chart polyline.spend-line"
    assert [
        el.get_attribute("data-loop") for el in driver.find_elements(By.CSS_SELECTOR, lines)
    ] == ["loop-api"]
    system.bus.publish(
        ev.IterationFinished(
            source=W,
            loop="loop-ui",
            task_id="UI-2",
            iteration=4,
            attempt=2,
            outcome=ev.IterationOutcome.CONTINUE,
            duration_s=30.0,
            cost_usd=1.5,
            cost_source=ev.CostSource.PRICE_TABLE,
        )
    )
    ui_line = f"{lines}[data-loop='loop-ui']"
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, ui_line))
    line = driver.find_element(By.CSS_SELECTOR, ui_line)
    assert (
        line.get_attribute("data-usd") == "1.5" and len(line.get_attribute("points").split()) == 4
    )
    assert line.size["width"] > 0 and "$1.50 on 1 task(s) never merged" in text(
        "#spend .spend-summary"
    )
    assert "loop-ui $1.50" in text("#spend .spend-legend")
    strokes = {
        el.value_of_css_property("stroke") for el in driver.find_elements(By.CSS_SELECTOR, lines)
    }
    assert len(strokes) == 2 and "none" not in strokes  # a colour per loop, from the CSS

    # Answer an escalation through its form.
    card = driver.find_element(By.CSS_SELECTOR, ".esc[data-id='e-1a2b3c']")
    card.find_element(By.CSS_SELECTOR, "button.option").click()  # fills "404"
    answer_box = card.find_element(By.TAG_NAME, "textarea")
    answer_box.send_keys(" — keep the old clients working")
    Select(card.find_element(By.TAG_NAME, "select")).select_by_value("retry")
    card.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    def answered() -> ev.EscalationAnswered | None:
        for _, event in system.bus.replay(types=["escalation.answered"]):
            assert isinstance(event, ev.EscalationAnswered)
            return event
        return None

    answer = wait_until(answered)
    assert answer.escalation_id == "e-1a2b3c"
    assert answer.answer == "404 — keep the old clients working"
    assert answer.decision is ev.Decision.RETRY
    wait_until(lambda: "Answer [retry]" in text("#escalations-closed"))
    wait_until(lambda: "escalation.answered" in text("#feed"))

    # The picture a person sees, kept for review.
    driver.find_element(
        By.CSS_SELECTOR, "article[data-loop='loop-api'] tr[data-task='API-1'] summary"
    ).click()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1440, max(900, min(int(height) + 40, 3000)))
    assert driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
