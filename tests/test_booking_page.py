"""The booking page in Debian's headless Chromium against the running waste service: a refusal
shown with its reason, a booking made, its state changing as the driver answers, a cancellation."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from linli.cloud.config import SmtpConfig
from linli.cloud.tokens import Scope, TokenBook
from linli.cloud.waste.config import TruckBroker, WasteConfig
from linli.cloud.waste.gtfs import load_feed
from linli.cloud.waste.service import WasteService
from linli.cloud.waste.state import WasteState
from linli.dashboards.recording import on_shift_all_day
from linli.localservers import LocalServer, free_port
from peers import Inbox, Receiver, Site
from support import LOOPBACK, protective_headers, waste_in_thread
from test_renovation_service import TRUCK, Terminal

FEED = Path(__file__).resolve().parents[1] / "deploy" / "gtfs" / "hongqiao"
TOKEN = "page-s3cret"  # noqa: S105 (the test's own)
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def browser(profile: Path) -> webdriver.Chrome:
    """Headless Chromium with nothing reaching out: this machine's network is closed."""
    for binary in (CHROMIUM, DRIVER):
        if not Path(binary).exists():
            pytest.fail(f"{binary} is missing: apt-get install chromium chromium-driver (scripts/setup does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
        f"--user-data-dir={profile}", "--window-size=412,915",  # a phone
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP violations are logged there
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def refusals(driver: webdriver.Chrome) -> list[str]:
    """What the browser refused (a policy, a load) since this was last asked."""
    return [
        e["message"]
        for e in driver.get_log("browser")  # type: ignore[no-untyped-call]
        if "Content Security Policy" in e["message"] or "Refused" in e["message"]
    ]


def api_docs(driver: webdriver.Chrome, base: str) -> tuple[list[str], bool]:
    """Open the API's documentation: what was refused, and whether it listed the operations."""
    driver.get(f"{base}/docs")
    WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"))
    return refusals(driver), bool(driver.find_elements(By.CSS_SELECTOR, ".opblock"))


def framed(driver: webdriver.Chrome, url: str) -> tuple[str, list[str]]:
    """Frame `url` in a page of another origin, as a hostile site would: where the frame ended
    up, and what the browser refused."""
    site = Site(f"<iframe src='{url}'></iframe>")
    try:
        driver.get(site.url)  # the load event waits for the frame
        driver.switch_to.frame(driver.find_element(By.TAG_NAME, "iframe"))
        where = str(driver.execute_script("return location.href"))
        driver.switch_to.default_content()
        return where, refusals(driver)
    finally:
        site.close()


def local(moment: dt.datetime) -> str:
    """A datetime-local input's value, in the browser's zone (the machine's)."""
    return moment.astimezone().strftime("%Y-%m-%dT%H:%M")


def test_staff_book_on_the_page_see_it_offered_and_accepted_then_cancel_it(
    mosquitto: LocalServer, peers: tuple[Receiver, Inbox, int], tmp_path: Path
) -> None:
    _, inbox, smtp = peers
    folder = tmp_path / "gtfs"
    shutil.copytree(FEED, folder)
    on_shift_all_day(folder, time.time() - 3600)
    api_port = free_port()
    config = WasteConfig(
        broker=TruckBroker(port=mosquitto.port),
        gtfs=folder,
        state=str(tmp_path / "waste.sqlite"),
        api_port=api_port,
        smtp=SmtpConfig(port=smtp, sender="waste@district.example"),
        delivery=LOOPBACK,
    )
    tokens = TokenBook(WasteState(config.state).engine)
    link = tokens.create("hongmei link", Scope.BOOK, compounds=["hongmei-1", "hongmei-2"])
    tokens.close()
    service = WasteService(config, TOKEN, load_feed(folder))
    seen: dict[str, Any] = {}
    terminal = None
    chromium = tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True)
    with chromium as profile, waste_in_thread(service):
        try:
            terminal = Terminal(mosquitto.port)
            driver = browser(Path(profile))
            wait = WebDriverWait(driver, 15)
            try:
                driver.get(f"http://127.0.0.1:{api_port}/book#token={link}")
                wait.until(lambda d: len(Select(d.find_element(By.ID, "compound")).options) == 2)
                options = Select(driver.find_element(By.ID, "compound")).options
                seen["compounds"] = sorted(o.get_attribute("value") for o in options)
                Select(driver.find_element(By.ID, "compound")).select_by_value("hongmei-1")
                driver.find_element(By.ID, "amount").send_keys("30")
                Select(driver.find_element(By.ID, "unit")).select_by_value("bags")
                now = dt.datetime.now(dt.UTC)

                def window(start: dt.datetime, end: dt.datetime) -> None:
                    for field, moment in (("earliest", start), ("latest", end)):
                        element = driver.find_element(By.ID, field)
                        driver.execute_script("arguments[0].value = arguments[1]", element, local(moment))

                driver.find_element(By.ID, "name").send_keys("Property office, hongmei-1")
                driver.find_element(By.ID, "email").send_keys("property.hongmei-1@district.example")
                # A window already over is refused, and the page says why.
                window(now - dt.timedelta(hours=3), now - dt.timedelta(hours=1))
                driver.find_element(By.ID, "submit").click()
                seen["refusal"] = wait.until(lambda d: d.find_element(By.ID, "error").text)
                window(now + dt.timedelta(minutes=10), now + dt.timedelta(hours=3))
                driver.find_element(By.ID, "submit").click()
                wait.until(lambda d: d.find_element(By.ID, "state").text == "offered")
                booking = driver.find_element(By.ID, "booking").text
                seen["truck"] = driver.find_element(By.ID, "truck").text
                order = terminal.order()
                seen["order"] = order["booking"] == booking
                terminal.send("order_reply", {"booking": booking, "accept": True})
                wait.until(lambda d: d.find_element(By.ID, "state").text == "accepted")
                driver.find_element(By.ID, "cancel").click()
                wait.until(lambda d: d.find_element(By.ID, "state").text == "cancelled")
                seen["trail"] = [
                    li.text.split(" ", 1)[1] for li in driver.find_elements(By.CSS_SELECTOR, "#trail li")
                ]
                seen["cancel_shown"] = driver.find_element(By.ID, "cancel").is_displayed()
                seen["page_log"] = refusals(driver)
                seen["docs"] = api_docs(driver, f"http://127.0.0.1:{api_port}")
                seen["framed"] = framed(driver, f"http://127.0.0.1:{api_port}/book#token={link}")
                seen["headers"] = {
                    path: protective_headers(
                        httpx.get(f"http://127.0.0.1:{api_port}{path}", timeout=10).headers
                    )
                    for path in ("/book", "/docs", "/docs/swagger-ui-bundle.js", "/openapi.json", "/trips")
                }
            finally:
                driver.quit()
        finally:
            if terminal is not None:
                terminal.close()
    assert "before now" in seen["refusal"]
    assert TRUCK in seen["truck"]
    assert seen["order"] is True
    assert [t.split(" (")[0] for t in seen["trail"]] == ["requested", "offered", "accepted", "cancelled"]
    assert seen["trail"][-1].endswith("(hongmei link)")
    assert seen["compounds"] == ["hongmei-1", "hongmei-2"]  # the link's own
    assert seen["cancel_shown"] is False
    assert seen["page_log"] == []  # the page ran whole under its Content-Security-Policy
    assert seen["docs"] == ([], True)  # Swagger UI from the package, nothing refused
    where, refused = seen["framed"]
    assert not where.startswith("http"), where  # the hostile site shows an error, not the page
    assert any("frame-ancestors 'none'" in line for line in refused), refused
    assert seen["headers"] == {path: {} for path in seen["headers"]}
    subjects = [m["Subject"] for m in inbox.messages if m["To"] == "property.hongmei-1@district.example"]
    assert any("cancelled" in s for s in subjects)
