"""Recording a prompt in a real browser (Debian's headless Chromium through chromedriver),
with a fake microphone that "says" an espeak-ng recording, then a call on which the IVR
plays what was recorded.

These fail, never skip, when Chromium or chromedriver is missing.
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
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from crisisline import config
from tests.review_helpers import heard, ivr_call, likeness, sha, sox, speech
from tests.web.conftest import PASSWORD
from tests.web.test_review import rows

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def microphone_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("microphone")
    # Chromium's fake capture device plays this file in a loop as the microphone.
    said = speech("You have reached the People's Response line. We never call the police.",
                  d / "speech.wav", rate=48000)
    sox("-n", "-r", "48000", "-b", "16", "-c", "1", str(d / "silence.wav"), "trim", "0", "3")
    return {"speech": said, "silence": d / "silence.wav"}


@pytest.fixture
def server(review_app: Flask) -> Iterator[str]:
    httpd = make_server("127.0.0.1", 0, review_app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def chromium(tmp_path: Path, microphone: Path) -> WebDriver:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: install Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,1000",
                # A microphone without a person: the permission is granted as a click would,
                # and the device "hears" the file.
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone}",
                "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def log_in(driver: WebDriver, base: str, name: str) -> None:
    driver.get(base + "/")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 5).until(lambda d: d.current_url.endswith("/review/"))


def record_take(driver: WebDriver, base: str, lang: str, prompt: str, seconds: float) -> None:
    """Press Record, let the microphone run ``seconds``, Stop, Listen, Keep."""
    driver.get(f"{base}/review/{lang}#p-{prompt}")
    box = driver.find_element(By.CSS_SELECTOR, f"#p-{prompt} .recorder")
    assert box.is_displayed()  # the script showed it: the browser can record

    def button(act: str):
        return box.find_element(By.CSS_SELECTOR, f'button[data-act="{act}"]')

    status = box.find_element(By.CSS_SELECTOR, ".rec-status")
    button("record").click()
    WebDriverWait(driver, 10).until(lambda _d: button("stop").is_enabled())
    WebDriverWait(driver, seconds + 10).until(
        lambda _d: status.text.startswith(f"Recording: {int(seconds)} s"))
    button("stop").click()
    WebDriverWait(driver, 10).until(lambda _d: button("keep").is_enabled())
    assert status.text.startswith("Recorded ")
    button("listen").click()
    button("keep").click()


def no_csp_violations(driver: WebDriver) -> None:
    messages = [e["message"] for e in driver.get_log("browser")]
    assert not [m for m in messages if "Content Security Policy" in m or "Refused to" in m], messages


async def test_a_prompt_recorded_in_the_browser_is_what_callers_hear(
        server: str, review_settings: config.Settings, microphone_files: dict[str, Path],
        tmp_path: Path) -> None:
    driver = chromium(tmp_path, microphone_files["speech"])
    try:
        log_in(driver, server, "reviewer")
        record_take(driver, server, "ht", "promise", seconds=3)
        WebDriverWait(driver, 20).until(
            lambda d: "promise: Recording kept" in d.find_element(By.CSS_SELECTOR, ".flash").text)
        section = driver.find_element(By.ID, "p-promise").text
        assert "Recorded in the browser by reviewer" in section
        no_csp_violations(driver)
    finally:
        driver.quit()

    row = rows(review_settings)[("ht", "promise")]
    assert row.recording_source == "browser" and row.recording_by == "reviewer"
    assert 1.5 < row.recording_seconds <= 4.5  # silence before and after the speech is trimmed
    # A caller who chooses Haitian Creole hears that recording: what the microphone said.
    trace = await ivr_call(review_settings, "3 02121 2")
    played = heard(review_settings, trace, "ht", "promise")
    assert sha(played) == row.recording_sha256
    said = tmp_path / "said-8k.wav"
    sox(str(microphone_files["speech"]), "-r", "8000", str(said))
    assert likeness(played.read_bytes(), said.read_bytes()) > 0.8


def test_a_silent_microphone_is_refused_on_the_page(server: str, review_settings: config.Settings,
                                                    microphone_files: dict[str, Path],
                                                    tmp_path: Path) -> None:
    before = sha(review_settings.prompts_path / "ht" / "waiting.wav")
    driver = chromium(tmp_path, microphone_files["silence"])
    try:
        log_in(driver, server, "reviewer")
        record_take(driver, server, "ht", "waiting", seconds=2)
        status = driver.find_element(By.CSS_SELECTOR, "#p-waiting .rec-status")
        WebDriverWait(driver, 20).until(lambda _d: status.text.startswith("Not kept:"))
        assert "We heard only silence" in status.text
        # The take is still there to listen to again or redo.
        assert driver.find_element(By.CSS_SELECTOR, '#p-waiting button[data-act="redo"]').is_enabled()
        no_csp_violations(driver)
    finally:
        driver.quit()
    assert sha(review_settings.prompts_path / "ht" / "waiting.wav") == before
    assert rows(review_settings) == {}
