"""The text line in a real browser (Debian's headless Chromium through chromedriver): a
texter's phone and a responder's phone in two sessions, what they write shown only as text,
"leave quickly" leaving nothing behind, and a 360 px wide screen.

These fail, never skip, when Chromium or chromedriver is missing.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from crisisline import config
from tests.text_helpers import free_port
from tests.web.test_browser import CHROMEDRIVER, CHROMIUM, log_in, no_csp_violations
from textline import create_app
from textline.runtime import Runtime

pytestmark = pytest.mark.slow
PAYLOADS = ('<script>window.__pwned = 1</script>',
            '<img src=x onerror="window.__pwned = 2">',
            '</p><b>bold?</b><a href="javascript:window.__pwned=3">click</a>',
            'right-to-left override: \u202egnp.exe\u202c and isolate \u2067x\u2069 done')


@dataclasses.dataclass
class Chat:
    url: str
    runtime: Runtime
    settings: config.Settings

    def offer(self, call_id: str, rid: str) -> str:
        """What the dispatcher does for a text: ring (OfferStore) and make a one-time link."""
        async def go() -> str:
            assert await self.runtime.store.offers.ring(call_id, rid, 1, 0)
            return await self.runtime.store.new_link(call_id, rid, 900)
        return f"{self.url}/r/{self.runtime.run(go())}"

    def conversation(self) -> str:
        client = redis.Redis.from_url(self.settings.effective_redis_url, decode_responses=True)
        found = client.zrange("pr:queue", 0, -1)
        assert len(found) == 1, found
        return found[0]


@pytest.fixture
def chat(web_settings: config.Settings) -> Iterator[Chat]:
    port = free_port()
    s = dataclasses.replace(web_settings, chat_secret_key="browser-test-secret",
                            chat_public_url=f"http://127.0.0.1:{port}")
    runtime = Runtime(s, upkeep=False)
    app = create_app(s, runtime=runtime)
    httpd = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield Chat(f"http://127.0.0.1:{port}", runtime, s)
    httpd.shutdown()
    httpd.server_close()
    runtime.close()


@pytest.fixture
def panel(app: Flask) -> Iterator[str]:
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[Callable[[str], WebDriver]]:
    """A phone's browser per name: 360 CSS pixels wide, its own profile."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: install Debian's chromium and chromium-driver")
    drivers: list[WebDriver] = []

    def phone(name: str) -> WebDriver:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / ('profile-' + name)}"):
            options.add_argument(arg)
        options.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": 360, "height": 740, "pixelRatio": 2.0}})
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        drivers.append(driver)
        return driver

    try:
        yield phone
    finally:
        for driver in drivers:
            driver.quit()


def wait(driver: WebDriver, seconds: float = 10) -> WebDriverWait:
    return WebDriverWait(driver, seconds)


def choose(driver: WebDriver, url: str, lang: str) -> None:
    driver.get(url + "/")
    driver.find_element(By.CSS_SELECTOR, f"#choose-form button[value={lang}]").click()
    wait(driver).until(ec.visibility_of_element_located((By.ID, "talk")))


def write(driver: WebDriver, text: str) -> None:
    box = driver.find_element(By.ID, "body")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.CSS_SELECTOR, "#send-form button[type=submit]").click()
    wait(driver).until(lambda d: d.find_element(By.ID, "body").get_attribute("value") == "")


def bodies(driver: WebDriver) -> list[str]:
    return [el.get_attribute("textContent") for el in
            driver.find_elements(By.CSS_SELECTOR, "#messages .body")]


def until_shown(driver: WebDriver, text: str) -> None:
    wait(driver, 15).until(lambda d: text in bodies(d))


def take(driver: WebDriver, link: str) -> None:
    driver.get(link)
    driver.find_element(By.XPATH, "//button[normalize-space()='Open']").click()
    wait(driver).until(ec.presence_of_element_located((By.XPATH, "//button[normalize-space()='Take it']")))
    driver.find_element(By.XPATH, "//button[normalize-space()='Take it']").click()
    wait(driver).until(ec.presence_of_element_located((By.ID, "send-form")))


def no_scroll_sideways(driver: WebDriver) -> None:
    width = driver.execute_script("return document.documentElement.scrollWidth")
    inner = driver.execute_script("return window.innerWidth")
    assert inner == 360 and width <= 360, (inner, width)


def test_a_texter_and_a_responder_write_both_ways(phones, chat: Chat) -> None:
    texter, responder = phones("texter"), phones("responder")
    choose(texter, chat.url, "es")
    assert texter.find_element(By.ID, "h-talk").text == "Hable con People's Response"
    promise = texter.find_element(By.CSS_SELECTOR, "p.promise").text
    assert "Nunca llamamos a la policía" in promise and "30 días" in promise  # before any word
    assert texter.execute_script("return document.documentElement.lang") == "es"
    write(texter, "Hola, necesito hablar con alguien")
    until_shown(texter, "Estamos buscando a alguien que le escriba ahora.")

    take(responder, chat.offer(chat.conversation(), "rosa-delgado"))
    until_shown(responder, "Hola, necesito hablar con alguien")
    until_shown(texter, "Una persona del equipo está con usted ahora.")
    write(responder, "Hola, soy Rosa. Estoy aquí.")
    until_shown(texter, "Hola, soy Rosa. Estoy aquí.")
    labels = [el.text for el in texter.find_elements(By.CSS_SELECTOR, "#messages .who")]
    assert labels[0] == "Usted" and labels[-1] == "Equipo"
    write(texter, "Gracias")
    until_shown(responder, "Gracias")
    for driver in (texter, responder):
        no_scroll_sideways(driver)
        no_csp_violations(driver)


def test_what_anyone_writes_is_shown_as_text(phones, chat: Chat, panel: str) -> None:
    texter, responder, supervisor = phones("texter"), phones("responder"), phones("supervisor")
    choose(texter, chat.url, "en")
    for payload in PAYLOADS:
        write(texter, payload)
    call_id = chat.conversation()
    take(responder, chat.offer(call_id, "rosa-delgado"))
    write(responder, PAYLOADS[1])
    for driver in (texter, responder):
        for payload in PAYLOADS:
            until_shown(driver, payload)
        assert driver.execute_script("return window.__pwned") is None
        assert not driver.find_elements(By.CSS_SELECTOR, "#messages img, #messages b, #messages a")
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # noqa: B018
        # Each message is isolated: an override inside one can't reorder its label or others.
        isolation = driver.execute_script(
            "return getComputedStyle(document.querySelector('#messages .body')).unicodeBidi")
        assert isolation == "isolate"
        assert driver.find_elements(By.CSS_SELECTOR, "#messages .body")[0].get_attribute("dir") == "auto"
        no_csp_violations(driver)

    # The panel's audited Show, in the same browser engine.
    supervisor.set_window_size(1280, 1000)
    log_in(supervisor, panel, "supervisor")
    supervisor.get(f"{panel}/queue/calls/{call_id}")
    supervisor.find_element(By.XPATH, "//button[contains(., 'Show the conversation')]").click()
    shown = wait(supervisor).until(ec.presence_of_element_located((By.ID, "revealed-conversation")))
    texts = [el.get_attribute("textContent") for el in shown.find_elements(By.CSS_SELECTOR, ".body")]
    assert [t for t in texts if t in PAYLOADS][:len(PAYLOADS)] == list(PAYLOADS)
    assert supervisor.execute_script("return window.__pwned") is None
    assert not shown.find_elements(By.CSS_SELECTOR, "img, b, a")
    no_csp_violations(supervisor)


def test_leave_quickly_leaves_nothing_behind(phones, chat: Chat) -> None:
    phone = phones("texter")
    phone.get("data:text/html,<title>before</title><p>before")
    start = phone.execute_script("return history.length")
    choose(phone, chat.url, "es")
    write(phone, "Mi pareja está aquí, no puedo hablar")
    until_shown(phone, "Mi pareja está aquí, no puedo hablar")
    call_id = chat.conversation()
    assert phone.execute_script("return history.length") == start + 1  # this one page, once
    assert phone.get_cookies() == []
    assert phone.execute_script("return localStorage.length + sessionStorage.length") == 0
    assert phone.execute_script("return document.cookie") == ""
    assert phone.execute_script("return indexedDB.databases()") == []

    phone.find_element(By.ID, "leave").click()
    wait(phone).until(lambda d: d.current_url.endswith("/today"))
    assert phone.title == "Today"
    assert phone.execute_script("return history.length") == start + 1  # the chat was replaced
    assert phone.get_cookies() == []
    assert phone.execute_script("return localStorage.length + sessionStorage.length") == 0
    phone.back()
    wait(phone).until(lambda d: d.title == "before")  # Back skips the chat: it is gone
    assert "Mi pareja" not in phone.page_source
    client = redis.Redis.from_url(chat.settings.effective_redis_url, decode_responses=True)
    data = client.hgetall(f"pr:call:{call_id}")
    assert (data["state"], data["end_reason"]) == ("abandoned", "texter_left")


def test_readable_and_labelled_on_a_360_pixel_screen(phones, chat: Chat) -> None:
    phone = phones("texter")
    phone.get(chat.url + "/")
    no_scroll_sideways(phone)
    buttons = phone.find_elements(By.CSS_SELECTOR, "#choose-form button")
    assert len(buttons) == len(chat.settings.languages) and all(b.size["height"] >= 44 for b in buttons)
    assert phone.find_element(By.ID, "leave").is_displayed()
    choose(phone, chat.url, "vi")
    no_scroll_sideways(phone)
    assert phone.find_element(By.ID, "leave").text == "Thoát nhanh"  # on every screen
    unlabelled = phone.execute_script(
        "return [...document.querySelectorAll('#talk textarea, #talk input:not([type=hidden])')]"
        ".filter(e => !e.labels || !e.labels.length || !e.labels[0].textContent.trim())"
        ".map(e => e.id)")
    assert unlabelled == []
    live = phone.find_element(By.ID, "messages")
    assert live.get_attribute("aria-live") == "polite"
    assert phone.find_element(By.ID, "status").get_attribute("role") == "status"
    assert phone.switch_to.active_element.get_attribute("id") == "h-talk"  # focus follows
    write(phone, "xin chào")
    wait(phone).until(lambda d: d.find_element(By.ID, "after-start").is_displayed())
    no_scroll_sideways(phone)
    no_csp_violations(phone)
