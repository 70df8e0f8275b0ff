"""The booking page in Debian's headless Chromium on a phone-sized window, loaded over plain HTTP
from a real host name (as the link staff are sent), against the running waste service and the
simulated truck terminal: Chinese by default, an English switch, refusals said in the page's
language, and the booking followed live as the truck accepts, drives and collects. Also: the
page's texts all come from the catalog, and the API's refusals carry stable codes."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from linli.catalog.i18n import LOCALES, catalog, text
from linli.cloud.notifier.config import SmtpConfig
from linli.cloud.scope import Scope
from linli.cloud.tokens import TokenBook
from linli.cloud.waste.bookings import State
from linli.cloud.waste.config import BookingRules, SmsGateway, TruckBroker, WasteConfig
from linli.cloud.waste.messages import truck_name
from linli.cloud.waste.service import WasteService
from linli.cloud.waste.state import WasteState
from linli.dashboards.recording import on_shift_all_day
from linli.demo.servers import LocalServer, free_port
from linli.transit.gtfs import load_feed
from peers import Inbox, Receiver, Site
from support import LOOPBACK, protective_headers, waste_in_thread
from test_renovation_service import TRUCK, Terminal

FEED = Path(__file__).resolve().parents[1] / "deploy" / "gtfs" / "hongqiao"
STATIC = Path(__file__).resolve().parents[1] / "src" / "linli" / "cloud" / "waste" / "static"
TOKEN = "page-s3cret"  # noqa: S105 (the test's own)
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
HOST = "booking.district.test"  # not localhost: the page gets no secure context
SHANGHAI = ZoneInfo("Asia/Shanghai")
CJK = re.compile(r"[\u4e00-\u9fff]")
# The old English page's words: none may show on the Chinese page.
OLD_WORDS = re.compile(
    r"\b(Book|Compound|How much|Unit|bags|From|Until|Your name|Mobile|phone|E-mail|Note|Booking|Truck|"
    r"Cancel|offered|accepted|requested|en route|collected|before now)\b"
)


def browser(profile: Path) -> webdriver.Chrome:
    """Headless Chromium on a phone's screen, the booking host name mapped to loopback and
    nothing reaching out: this machine's network is closed."""
    for binary in (CHROMIUM, DRIVER):
        if not Path(binary).exists():
            pytest.fail(f"{binary} is missing: apt-get install chromium chromium-driver (scripts/setup does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
        f"--user-data-dir={profile}", "--window-size=390,844", "--lang=zh-CN",
        f"--host-resolver-rules=MAP {HOST} 127.0.0.1",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP violations are logged there
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def shanghai(moment: dt.datetime) -> str:
    """A datetime-local input's value: the page reads it as Shanghai time, wherever the browser is."""
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M")


@contextmanager
def booking_service(
    mosquitto: LocalServer, peers: tuple[Receiver, Inbox, int], tmp_path: Path
) -> Iterator[tuple[int, str]]:
    """The district's waste service with its renovation truck on shift and an SMS gateway (the
    test's receiver); yields its API port and a booking link for two hongmei compounds."""
    receiver, _, smtp = peers
    folder = tmp_path / "gtfs"
    shutil.copytree(FEED, folder)
    on_shift_all_day(folder, time.time() - 3600)
    config = WasteConfig(
        broker=TruckBroker(port=mosquitto.port),
        gtfs=folder,
        state=str(tmp_path / "waste.sqlite"),
        api_port=free_port(),
        smtp=SmtpConfig(port=smtp, sender="waste@district.example"),
        bookings=BookingRules(sms=SmsGateway(url=f"{receiver.url}/sms")),
        delivery=LOOPBACK,
    )
    tokens = TokenBook(WasteState(config.state).engine)
    link = tokens.create("hongmei link", Scope.BOOK, compounds=["hongmei-1", "hongmei-2"])
    tokens.close()
    with waste_in_thread(WasteService(config, TOKEN, load_feed(folder))):
        yield config.api_port, link


def test_a_phone_books_over_plain_http_in_chinese_and_follows_the_truck_live(
    mosquitto: LocalServer, peers: tuple[Receiver, Inbox, int], tmp_path: Path
) -> None:
    receiver, _, _ = peers
    feed = load_feed(FEED)
    gubei, pile = feed.stops["gubei-1"], feed.stops["hongmei-1"]
    seen: dict[str, Any] = {}
    shots = tmp_path / "screenshots"
    shots.mkdir()
    chromium = tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True)
    with chromium as profile, booking_service(mosquitto, peers, tmp_path) as (port, link):
        terminal = Terminal(mosquitto.port)
        driver = browser(Path(profile))
        wait = WebDriverWait(driver, 15)

        def state_is(state: str) -> None:
            wait.until(lambda d: d.find_element(By.ID, "state").get_attribute("data-state") == state)
            seen[state] = visible(driver)
            driver.save_screenshot(str(shots / f"{state}.png"))

        try:
            driver.get(f"http://{HOST}:{port}/book#token={link}")
            wait.until(lambda d: len(Select(d.find_element(By.ID, "compound")).options) == 2)
            seen["secure"] = driver.execute_script("return window.isSecureContext")
            seen["form"] = visible(driver)
            seen["lang"] = driver.find_element(By.TAG_NAME, "html").get_attribute("lang")
            driver.save_screenshot(str(shots / "form.png"))
            Select(driver.find_element(By.ID, "compound")).select_by_value("hongmei-1")
            driver.find_element(By.ID, "amount").send_keys("30")
            driver.find_element(By.ID, "name").send_keys("红梅一村物业")
            driver.find_element(By.ID, "phone").send_keys("13800138000")
            now = dt.datetime.now(dt.UTC)

            def window(start: dt.datetime, end: dt.datetime) -> None:
                for field, moment in (("earliest", start), ("latest", end)):
                    element = driver.find_element(By.ID, field)
                    driver.execute_script("arguments[0].value = arguments[1]", element, shanghai(moment))

            # A window already over: the service refuses it, and the page says why, in Chinese.
            window(now - dt.timedelta(hours=3), now - dt.timedelta(hours=1))
            driver.find_element(By.ID, "submit").click()
            seen["refusal"] = wait.until(lambda d: d.find_element(By.ID, "error").text)
            driver.save_screenshot(str(shots / "refused.png"))
            window(now + dt.timedelta(minutes=10), now + dt.timedelta(hours=3))
            driver.find_element(By.ID, "submit").click()
            state_is("offered")
            booking = driver.find_element(By.ID, "booking").get_attribute("data-id")
            seen["order"] = terminal.order()
            terminal.send("order_reply", {"booking": booking, "accept": True})
            state_is("accepted")
            terminal.send("location", {"lat": gubei.lat, "lon": gubei.lon, "speed": 25.0})
            state_is("en_route")
            wait.until(lambda d: d.find_element(By.ID, "predicted").text)
            seen["predicted"] = driver.find_element(By.ID, "predicted").text
            terminal.send("location", {"lat": pile.lat, "lon": pile.lon, "speed": 0.0})
            state_is("arrived")
            terminal.send("lift", {"stop": "", "bins": 1, "collected_kg": 412.5})
            state_is("collected")
            # The English switch: the same booking, in English.
            driver.find_element(By.ID, "switch").click()
            wait.until(lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en")
            seen["english"] = visible(driver)
            driver.save_screenshot(str(shots / "english.png"))
        finally:
            driver.quit()
            terminal.close()
    assert seen["secure"] is False  # the case that broke: no crypto.randomUUID here
    assert seen["lang"] == "zh-CN"
    assert seen["refusal"] == text("booking.error.window_over")
    # The driver's terminal shows the order in Chinese, the pile's place by name.
    order = seen["order"]
    assert order["booking"] == booking
    assert order["locale"] == "zh-CN"
    assert order["title"] == f"装修垃圾清运单：{pile.name}", order
    assert order["text"].startswith(f"到{pile.name}清运装修垃圾约"), order
    for state in ("form", "offered", "accepted", "en_route", "arrived", "collected"):
        assert CJK.search(seen[state]), state
        assert not OLD_WORDS.search(seen[state]), (state, OLD_WORDS.findall(seen[state]))
    for state in ("offered", "accepted", "en_route", "arrived", "collected"):
        assert text(f"booking.state.{state}") in seen[state]
    assert text("booking.field.phone") in seen["form"]
    assert text("booking.field.window") in seen["form"]
    assert re.fullmatch(r"预计到达：(\d{1,2}月\d{1,2}日 )?\d{2}:\d{2}", seen["predicted"]), seen["predicted"]
    # The place and the truck as people know them: the bin room's name, the fleet number and plate.
    plate = feed.extras.trucks[TRUCK].plate
    assert text("booking.truck", truck=truck_name(feed, TRUCK, "zh-CN")) in seen["en_route"]
    assert text("booking.compound", compound=pile.name) in seen["offered"]
    for state in ("offered", "accepted", "en_route", "arrived", "collected", "english"):
        assert TRUCK not in seen[state], (state, seen[state])
        assert pile.id not in seen[state], (state, seen[state])
    assert pile.name_in("en") in seen["english"]
    assert plate in seen["english"]
    assert text("booking.state.collected", "en") in seen["english"]
    # Every word is English but the truck's plate (沪D...) and the switch back to Chinese.
    english = seen["english"].replace(text("booking.switch", "en"), "").replace(plate, "")
    assert not CJK.search(english), seen["english"]
    assert receiver.at("/sms"), "the phone given is told by SMS"
    assert {p.name for p in shots.iterdir()} >= {"form.png", "refused.png", "en_route.png", "english.png"}


def visible(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)


def test_refusals_carry_codes_the_page_says_in_either_language(
    mosquitto: LocalServer, peers: tuple[Receiver, Inbox, int], tmp_path: Path
) -> None:
    now = dt.datetime.now(SHANGHAI)

    def request(phone: str, start: dt.datetime) -> dict[str, Any]:
        return {
            "compound": "hongmei-1",
            "bags": 10,
            "earliest": start.isoformat(),
            "latest": (start + dt.timedelta(hours=2)).isoformat(),
            "contact": {"name": "红梅一村物业", "phone": phone},
        }

    with booking_service(mosquitto, peers, tmp_path) as (port, link):
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {link}"}, timeout=10) as api:
            answers = {
                "short phone": api.post("/bookings", json=request("1380013800", now)),
                "landline": api.post("/bookings", json=request("02162345678", now)),
                "over": api.post("/bookings", json=request("13800138000", now - dt.timedelta(hours=3))),
                "elsewhere": api.post(
                    "/bookings", json={**request("13800138000", now), "compound": "gubei-1"}
                ),
                "missing": api.get("/bookings/nosuchbooking"),
                "plus86": api.post("/bookings", json=request("+8613800138000", now)),
            }
        with httpx.Client(base_url=base, timeout=10) as anyone:  # the page's own files need no token
            zh, en = anyone.get("/book/messages"), anyone.get("/book/messages", params={"locale": "en"})
            script, style = anyone.get("/book/book.js"), anyone.get("/book/book.css")
            other = anyone.get("/book/book.html")
    codes = {name: (r.status_code, r.json().get("code")) for name, r in answers.items()}
    assert codes == {
        "short phone": (422, "phone_invalid"),
        "landline": (422, "phone_invalid"),
        "over": (422, "window_over"),
        "elsewhere": (403, "not_its_compound"),
        "missing": (404, "not_found"),
        "plus86": (201, None),
    }
    assert "before now" in answers["over"].json()["detail"]  # the detail is kept for machines
    assert zh.json()["booking.error.window_over"] == text("booking.error.window_over")
    assert en.json()["booking.error.window_over"] == text("booking.error.window_over", "en")
    assert all(key.startswith("booking.") for key in zh.json())
    assert "javascript" in script.headers["content-type"], script.status_code
    assert "css" in style.headers["content-type"], style.status_code
    assert other.status_code == 401  # only the named files are public


class Texts(HTMLParser):
    """The text nodes of a page outside its scripts and styles, and the keys it names."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self.keys: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skip += tag in ("script", "style")
        self.keys += [v for k, v in attrs if k == "data-t" and v]
        self.texts += [v for k, v in attrs if k in ("placeholder", "title", "aria-label") and v]

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.texts.append(data.strip())


def test_every_text_of_the_page_comes_from_the_catalog() -> None:
    page = Texts()
    page.feed((STATIC / "book.html").read_text(encoding="utf-8"))
    script = (STATIC / "book.js").read_text(encoding="utf-8")
    code = re.sub(r"//[^\n]*|/\*.*?\*/", "", script, flags=re.DOTALL)  # comments are for us
    literals = re.findall(r'"((?:[^"\\\n]|\\.)*)"|`([^`]*)`', code)
    words = [
        s
        for pair in literals
        for s in pair
        if s != "use strict" and re.search(r"[A-Za-z]{2,}[,:!?]? [A-Za-z]{2,}", s)
    ]
    used = set(page.keys) | set(re.findall(r'\bt\("(booking(?:\.[a-z0-9_]+)+)"', code))
    refusals = {
        *("window_over", "window_empty", "phone_invalid", "contact_missing", "not_its_compound"),
        *("key_conflict", "unauthorized", "network", "refused", "invalid", "too_late", "not_found"),
    }
    needed = used | {f"booking.state.{s}" for s in State} | {f"booking.error.{c}" for c in refusals}
    assert page.texts == [], "text in the page's HTML, not from the catalog"
    assert words == [], "English text in the page's script, not from the catalog"
    assert "randomUUID" not in code  # secure contexts only: plain HTTP has none
    assert "<script>" not in (STATIC / "book.html").read_text(encoding="utf-8")  # CSP script-src 'self'
    for locale in LOCALES:
        assert needed <= set(catalog(locale)), (locale, needed - set(catalog(locale)))


def refusals(driver: webdriver.Chrome) -> list[str]:
    """What the browser refused (a policy, a load) since this was last asked."""
    return [
        e["message"]
        for e in driver.get_log("browser")  # type: ignore[no-untyped-call]
        if "Content Security Policy" in e["message"] or "Refused" in e["message"]
    ]


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


def test_the_page_and_the_api_docs_run_whole_under_their_policies_and_nobody_frames_them(
    mosquitto: LocalServer, peers: tuple[Receiver, Inbox, int], tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}
    chromium = tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True)
    with chromium as profile, booking_service(mosquitto, peers, tmp_path) as (port, link):
        base = f"http://{HOST}:{port}"
        driver = browser(Path(profile))
        wait = WebDriverWait(driver, 15)
        try:
            driver.get(f"{base}/book#token={link}")
            wait.until(lambda d: len(Select(d.find_element(By.ID, "compound")).options) == 2)
            seen["page"] = refusals(driver)
            driver.get(f"{base}/docs")
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"))
            seen["docs"] = refusals(driver)
            seen["framed"] = framed(driver, f"http://127.0.0.1:{port}/book#token={link}")
        finally:
            driver.quit()
        seen["headers"] = {
            path: protective_headers(httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10).headers)
            for path in (
                "/book",
                "/book/book.js",
                "/docs",
                "/docs/swagger-ui-bundle.js",
                "/openapi.json",
                "/trips",
            )
        }
    assert seen["page"] == []  # the booking page ran whole under its Content-Security-Policy
    assert seen["docs"] == []  # Swagger UI from the package, nothing refused
    where, refused = seen["framed"]
    assert not where.startswith("http"), where  # the hostile site shows an error, not the page
    assert any("frame-ancestors 'none'" in line for line in refused), refused
    assert seen["headers"] == {path: {} for path in seen["headers"]}


def test_at_a_time_scale_the_page_proposes_windows_from_the_service_s_clock_not_the_phone_s(
    mosquitto: LocalServer, tmp_path: Path
) -> None:
    """`linli demo --time-scale 60`: the waste service runs on the demo's clock (here 03:05 the
    day after tomorrow, an hour a minute); the page proposes the next full hour after the
    service's time, plus one, and three hours to choose in, whatever the phone's clock says."""
    from linli.catalog.simtime import ENV, SharedClock
    from support import linli_logged, stop_logged, wait_for

    folder = tmp_path / "gtfs"
    shutil.copytree(FEED, folder)
    state, port = tmp_path / "waste.sqlite", free_port()
    config = tmp_path / "waste.toml"
    config.write_text(
        f'gtfs = "{folder}"\nstate = "{state}"\napi_host = "127.0.0.1"\napi_port = {port}\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {mosquitto.port}\n',
        encoding="utf-8",
    )
    tokens = TokenBook(WasteState(str(state)).engine)
    link = tokens.create("hongmei link", Scope.BOOK, compounds=["hongmei-1", "hongmei-2"])
    tokens.close()
    day = dt.date.today() + dt.timedelta(days=2)
    start = dt.datetime.combine(day, dt.time(3, 5), SHANGHAI).timestamp()
    clock = SharedClock(start, time.time(), 60.0)
    log = tmp_path / "waste.log"
    os.environ[ENV] = clock.encode()  # the service's process only: removed at once below
    try:
        proc = linli_logged(log, TOKEN, "waste", "run", "--config", str(config))
    finally:
        del os.environ[ENV]
    chromium = tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True)
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/book/clock"), "the waste service", 120)
        with chromium as profile:
            driver = browser(Path(profile))
            try:
                before = clock.now()
                driver.get(f"http://{HOST}:{port}/book#token={link}")
                wait = WebDriverWait(driver, 30)
                wait.until(lambda d: d.find_element(By.ID, "earliest").get_attribute("value"))
                earliest = driver.find_element(By.ID, "earliest").get_attribute("value")
                latest = driver.find_element(By.ID, "latest").get_attribute("value")
                after = clock.now()
            finally:
                driver.quit()
    finally:
        stop_logged([proc], [log])

    def proposed(t: float) -> dt.datetime:
        return dt.datetime.fromtimestamp((int(t // 3600) + 2) * 3600, SHANGHAI)

    # The service's hour, not the phone's (its clock is days behind): one of the hours the
    # simulated clock passed while the page loaded.
    hours = {shanghai(proposed(h * 3600.0)) for h in range(int(before // 3600), int(after // 3600) + 1)}
    assert earliest in hours, (earliest, hours)
    assert earliest.startswith(day.isoformat())
    start_ms = dt.datetime.fromisoformat(earliest).replace(tzinfo=SHANGHAI)
    assert latest == shanghai(start_ms + dt.timedelta(hours=3))


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
