"""The panel in a real browser (Debian's headless Chromium through chromedriver).

These fail, never skip, when Chromium or chromedriver is missing: the live queue is the
part of the panel that only a browser can check.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from crisisline import config
from tests.web.conftest import PASSWORD, accept, add_record, new_call

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
pytestmark = pytest.mark.slow


@pytest.fixture
def server(app: Flask) -> Iterator[str]:
    # The same threaded WSGI server `peoples-response web` runs (one thread per stream).
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: install Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def log_in(driver: WebDriver, base: str, name: str) -> None:
    driver.get(base + "/")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 5).until(ec.presence_of_element_located((By.TAG_NAME, "nav")))


def no_csp_violations(driver: WebDriver) -> None:
    messages = [e["message"] for e in driver.get_log("browser")]
    assert not [m for m in messages if "Content Security Policy" in m or "Refused to" in m], messages


def test_live_queue_updates_without_reload(browser: WebDriver, server: str, redis_url: str) -> None:
    log_in(browser, server, "supervisor")
    assert browser.current_url.endswith("/queue/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Live queue"
    marker = browser.execute_script("window.__sameDocument = 42; return window.__sameDocument;")
    assert marker == 42

    new_call(redis_url, "brw1", language="vi", neighborhood="Dorchester")
    row = WebDriverWait(browser, 2).until(ec.presence_of_element_located((By.ID, "w-brw1")))
    assert "Vietnamese" in row.text and "Dorchester" in row.text
    assert browser.find_element(By.ID, "waiting-count").text == "1"
    assert "New call waiting" in browser.find_element(By.ID, "announce").text

    wait_cell = row.find_element(By.CSS_SELECTOR, "td[data-since]")
    first = wait_cell.text
    WebDriverWait(browser, 2).until(lambda _d: wait_cell.text != first)  # it ticks

    accept(redis_url, "brw1", "rosa-delgado")
    active = WebDriverWait(browser, 2).until(ec.presence_of_element_located((By.ID, "a-brw1")))
    assert "Rosa Delgado" in active.text
    WebDriverWait(browser, 2).until(ec.invisibility_of_element_located((By.ID, "w-brw1")))
    state = browser.find_element(By.CSS_SELECTOR, "#r-rosa-delgado td.state")
    assert state.text == "on a call"
    # Still the same page: nothing was reloaded.
    assert browser.execute_script("return window.__sameDocument;") == 42
    no_csp_violations(browser)


def test_roster_edit_with_an_emergency_number_is_refused_next_to_the_field(
        browser: WebDriver, server: str) -> None:
    log_in(browser, server, "admin")
    browser.get(server + "/roster/responder/new")
    browser.find_element(By.ID, "f-id").send_keys("test-person")
    browser.find_element(By.ID, "f-name").send_keys("Test Person")
    browser.find_element(By.ID, "f-phone").send_keys("911")
    browser.find_element(By.CSS_SELECTOR, "input[name=languages][value=en]").click()
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    error = WebDriverWait(browser, 5).until(ec.presence_of_element_located((By.ID, "e-phone")))
    assert "emergency" in error.text
    phone = browser.find_element(By.ID, "f-phone")
    assert phone.get_attribute("aria-invalid") == "true"
    assert "e-phone" in (phone.get_attribute("aria-describedby") or "")
    # The message sits in the phone field's own paragraph, right after the input.
    assert error.find_element(By.XPATH, "..") == phone.find_element(By.XPATH, "..")
    no_csp_violations(browser)


def test_oversight_cannot_open_a_transcript(browser: WebDriver, server: str,
                                            web_settings: config.Settings) -> None:
    add_record(web_settings, "brw2", transcript="words only staff may read")
    log_in(browser, server, "oversight")
    assert "/oversight/" in browser.current_url
    assert browser.find_element(By.CSS_SELECTOR, "svg.chart") is not None
    browser.get(server + "/history/calls/brw2/transcript")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not for your role"
    assert "words only staff" not in browser.page_source


def test_supervisor_reveals_transcript_with_a_click(browser: WebDriver, server: str,
                                                    web_settings: config.Settings) -> None:
    add_record(web_settings, "brw3", transcript="please call my sister")
    log_in(browser, server, "supervisor")
    browser.get(server + "/history/calls/brw3")
    assert "please call my sister" not in browser.page_source
    browser.find_element(By.XPATH, "//button[contains(., 'Show the transcript')]").click()
    shown = WebDriverWait(browser, 5).until(
        ec.presence_of_element_located((By.ID, "revealed-transcript")))
    assert "please call my sister" in shown.text
    no_csp_violations(browser)
