"""The search page in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

Each step leaves a screenshot in tests/artifacts/ (or $XMODAL_ARTIFACTS). Without a browser these
tests skip, naming the package, unless XMODAL_REQUIRE_BROWSER=1 (as in CI), where a missing browser is a
failure (tests/system_tools.py). Install one with: sudo apt-get install chromium chromium-driver
"""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from conftest import CATALOG, REPO
from fakes import FakeEncoder
from xmodal.indexer import IndexConfig, build_index
from server import Server
from system_tools import CHROMEDRIVER, CHROMIUM, needs

pytest.importorskip("fastapi", reason="xmodal[serve] is part of .[dev]")
pytestmark = needs(CHROMIUM, CHROMEDRIVER)
BROWSER, DRIVER = CHROMIUM.found(), CHROMEDRIVER.found()

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service as DriverService  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

ARTIFACTS = Path(os.environ.get("XMODAL_ARTIFACTS", REPO / "tests" / "artifacts"))
RED_CAR = "/?q=I%20want%20to%20buy%20a%20red%20car&target=product"


PHOTOLESS = {"Blue family hatchback", "Green vintage car", "Red running shoes"}  # in the 'gaps' shop
DEMO_SHOP = REPO / "data" / "shop" / "products.csv"
RED = {"Box of red apples", "Red sports car", "Red running shoes", "Red mug"}  # the demo shop's red products


def shop_with_gaps(folder: Path) -> Path:
    """The catalog's listings, two of them linking photos that are not there and one no photo at all."""
    with open(CATALOG / "listings.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["image"] = str(CATALOG / row["image"])
        if row["title"] in PHOTOLESS:
            row["image"] = "" if row["title"] == "Red running shoes" else str(folder / "gone.png")
    table = folder / "listings.csv"
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    encoder = FakeEncoder()
    build_index(root / "shop.idx", IndexConfig(texts=[CATALOG / "listings.csv"], text_column="description",
                                               image_column="image", workers=0), encoder=encoder)
    build_index(root / "photos.idx", IndexConfig(images=[CATALOG / "images"], workers=0), encoder=encoder)
    build_index(root / "gaps.idx", IndexConfig(texts=[shop_with_gaps(root)], text_column="description",
                                               image_column="image", workers=0), encoder=encoder)
    keyed = root / "keyed"
    keyed.mkdir()
    shutil.copytree(CATALOG, keyed / "catalog")
    build_index(root / "keyed.idx", IndexConfig(texts=[keyed / "catalog" / "listings.csv"], text_column="description",
                                                image_column="image", id_column="id", workers=0), encoder=encoder)
    build_index(root / "demo.idx", IndexConfig(texts=[DEMO_SHOP], text_column="description", image_column="image",
                                               id_column="sku", workers=0), encoder=encoder)
    up = Server(str(root / "shop.idx"), "--index", f"photos={root / 'photos.idx'}",
                "--index", f"gaps={root / 'gaps.idx'}", "--index", f"keyed={root / 'keyed.idx'}",
                "--index", f"demo={root / 'demo.idx'}")
    up.keyed_table, up.keyed_index = keyed / "catalog" / "listings.csv", root / "keyed.idx"
    with up:
        yield up


def start_browser(width: int = 1280, height: int = 900) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-extensions", "--no-first-run",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=DriverService(DRIVER), options=options)
    browser.set_page_load_timeout(60)
    return browser


@pytest.fixture
def browser():
    started = start_browser()
    yield started
    started.quit()


def shot(browser, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def wait(browser, condition, timeout: float = 30):
    # The list is redrawn when an answer arrives: a card read as it is replaced is read again.
    return WebDriverWait(browser, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda b: condition(b))


def cards(browser):
    return browser.find_elements(By.CSS_SELECTOR, "#results .card")


def rows(browser) -> list[int]:
    """The cards' row ids, read in one step so a redraw cannot land halfway."""
    return [int(r) for r in browser.execute_script(
        "return [...document.querySelectorAll('#results .card')].map(c => c.dataset.rowId)")]


def thumbnails_loaded(browser) -> bool:
    return browser.execute_script(
        "const imgs=[...document.querySelectorAll('#results .card:not(.no-photo) img')]"
        "  .filter(i=>i.getBoundingClientRect().top<window.innerHeight);"  # lazy: those on screen
        "return imgs.length>0 && imgs.every(i=>i.complete && i.naturalWidth>0);")


def query_of(browser) -> dict:
    return parse_qs(urlparse(browser.current_url).query)


def test_a_shared_url_runs_its_search_and_shows_thumbnails(server, browser):
    browser.get(server.url + RED_CAR)
    wait(browser, lambda b: len(cards(b)) == 12 and thumbnails_loaded(b))
    first = cards(browser)[0]
    assert "Red sports car" in first.text and "18500" in first.text and "row 0" in first.text
    assert browser.find_element(By.ID, "q").get_attribute("value") == "I want to buy a red car"
    assert browser.find_element(By.CSS_SELECTOR, "input[value=product]").is_selected()
    shot(browser, "01-red-car-from-url")


def test_typing_a_query_shows_thumbnails_and_puts_it_in_the_url(server, browser):
    browser.get(server.url + "/?index=photos")
    box = wait(browser, lambda b: b.find_element(By.ID, "q"))
    box.send_keys("a blue car", Keys.ENTER)
    wait(browser, lambda b: len(cards(b)) > 0 and thumbnails_loaded(b))
    assert "02-blue-car.png" in cards(browser)[0].text
    assert query_of(browser)["q"] == ["a blue car"] and query_of(browser)["target"] == ["image"]
    heights = {round(t.rect["height"]) for t in browser.find_elements(By.CSS_SELECTOR, ".card .thumb")}
    assert len(heights) == 1 and heights.pop() > 50  # every thumbnail box is sized before its photo arrives
    shot(browser, "02-typed-query")


def test_the_seed_sentence_typed_in_chinese_finds_the_red_car_and_says_what_was_searched(server, browser):
    browser.get(server.url + "/")
    box = wait(browser, lambda b: b.find_element(By.ID, "q"))
    box.send_keys("\u6211\u60f3\u8981\u4e70\u4e00\u8f86\u7ea2\u8272\u6c7d\u8f66", Keys.ENTER)  # 我想要买一辆红色汽车
    wait(browser, lambda b: len(cards(b)) > 0 and b.find_element(By.ID, "translation").is_displayed())
    assert "Red sports car" in cards(browser)[0].text
    assert browser.find_element(By.ID, "translation").text == "Searched as: \u201cred car\u201d (translated from zh)"
    box.clear()
    box.send_keys("a blue car", Keys.ENTER)  # an English query is searched as typed: the line goes
    wait(browser, lambda b: not b.find_element(By.ID, "translation").is_displayed())
    shot(browser, "02-chinese-query")


def test_search_by_an_uploaded_photo(server, browser):
    browser.get(server.url + "/?index=photos")
    picker = wait(browser, lambda b: b.find_element(By.ID, "file"))
    picker.send_keys(str(CATALOG / "images" / "03-green-car.png"))
    wait(browser, lambda b: len(cards(b)) > 0 and thumbnails_loaded(b))
    assert "03-green-car.png" in cards(browser)[0].text
    chips = browser.find_element(By.ID, "chips").text
    assert "Photo: 03-green-car.png" in chips
    shot(browser, "03-search-by-photo")


def test_like_and_dislike_change_the_list_and_can_be_taken_back(server, browser):
    browser.get(server.url + RED_CAR)
    wait(browser, lambda b: len(cards(b)) == 12)
    before = rows(browser)
    liked = before[1]
    cards(browser)[1].find_element(By.CSS_SELECTOR, "button.like").click()
    wait(browser, lambda b: query_of(b).get("like") == [str(liked)] and len(cards(b)) == 11)
    after = rows(browser)
    assert liked not in after and after != [r for r in before if r != liked]  # gone, and the order changed
    assert "Liked:" in browser.find_element(By.ID, "chips").text
    shot(browser, "04-liked")
    disliked = after[0]
    cards(browser)[0].find_element(By.CSS_SELECTOR, "button.dislike").click()
    wait(browser, lambda b: query_of(b).get("dislike") == [str(disliked)] and disliked not in rows(b))
    assert "Disliked:" in browser.find_element(By.ID, "chips").text
    shot(browser, "05-disliked")
    browser.find_element(By.CSS_SELECTOR, "#chips .chip.liked button").click()  # take the like back
    wait(browser, lambda b: "like" not in query_of(b) and liked in rows(b))
    browser.refresh()  # the state lives in the URL: a reload shows the same search
    wait(browser, lambda b: liked in rows(b) and disliked not in rows(b))
    assert "Disliked:" in browser.find_element(By.ID, "chips").text
    shot(browser, "06-like-removed-after-reload")


def test_a_like_in_the_url_names_the_key_and_still_means_that_product_after_a_reindex(server, browser):
    """A bookmarked like=19 named another product once its row was gone; with an id column the URL holds
    id:KEY, which survives the table being re-ordered and indexed again."""
    browser.get(server.url + RED_CAR + "&index=keyed")
    wait(browser, lambda b: len(cards(b)) == 12)
    liked_title = cards(browser)[1].find_element(By.CSS_SELECTOR, ".text").text
    cards(browser)[1].find_element(By.CSS_SELECTOR, "button.like").click()
    wait(browser, lambda b: (query_of(b).get("like") or [""])[0].startswith("id:") and len(cards(b)) == 11)
    [reference] = query_of(browser)["like"]
    with open(server.keyed_table, newline="", encoding="utf-8") as handle:
        rows_before = list(csv.DictReader(handle))
    liked_row = next(r for r in rows_before if r["id"] == reference.removeprefix("id:"))
    assert liked_row["description"] == liked_title
    reordered = [r for r in rows_before[::-1] if r is not liked_row] + [liked_row]  # it moves to the last line
    with open(server.keyed_table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows_before[0]))
        writer.writeheader()
        writer.writerows(reordered)
    build_index(server.keyed_index, IndexConfig(workers=0), encoder=FakeEncoder())
    browser.refresh()
    wait(browser, lambda b: len(cards(b)) == 11)
    texts = browser.execute_script("return [...document.querySelectorAll('#results .card .text')].map(t => t.textContent)")
    assert liked_title not in texts and "Liked:" in browser.find_element(By.ID, "chips").text


SLOW_NEXT_SEARCH = """
const realFetch = window.fetch;
window.slowAnswered = false;
window.fetch = (url, options) => {
  window.fetch = realFetch;  // only this one call is slow
  return new Promise((resolve) => setTimeout(() => realFetch(url, options).then((answer) => {
    resolve(answer);
    setTimeout(() => { window.slowAnswered = true; }, 200);  // after the page has had the answer
  }), 1500));
};
"""


def test_an_older_answer_arriving_late_does_not_replace_the_newer_one(server, browser):
    """Like, then dislike before the like's answer is back: the list shows the dislike's answer, even when the
    like's answer arrives after it (a slow network, a busy server)."""
    browser.get(server.url + RED_CAR)
    wait(browser, lambda b: len(cards(b)) == 12)
    before = rows(browser)
    browser.execute_script(SLOW_NEXT_SEARCH)
    cards(browser)[1].find_element(By.CSS_SELECTOR, "button.like").click()
    cards(browser)[2].find_element(By.CSS_SELECTOR, "button.dislike").click()
    wait(browser, lambda b: len(cards(b)) == 10)
    wait(browser, lambda b: b.execute_script("return window.slowAnswered"))
    assert before[1] not in rows(browser) and before[2] not in rows(browser)
    assert len(cards(browser)) == 10 and "Searching" not in browser.find_element(By.ID, "status").text


def test_a_bad_filter_shows_its_error_and_a_good_one_narrows(server, browser):
    browser.get(server.url + RED_CAR)
    wait(browser, lambda b: len(cards(b)) == 12)
    where = browser.find_element(By.ID, "where")
    where.send_keys("price <", Keys.ENTER)
    error = wait(browser, lambda b: b.find_element(By.ID, "error") if b.find_element(By.ID, "error").is_displayed()
                 else None)
    assert "filter" in error.text.lower() and where.get_attribute("aria-invalid") == "true"
    shot(browser, "07-bad-filter")
    where.send_keys(" 10000", Keys.ENTER)
    wait(browser, lambda b: not b.find_element(By.ID, "error").is_displayed() and 0 < len(cards(b)) < 12)
    prices = [int(c.find_element(By.XPATH, ".//dt[text()='price']/following-sibling::dd[1]").text) for c in cards(browser)]
    assert prices and all(p < 10000 for p in prices)
    assert query_of(browser)["where"] == ["price < 10000"]
    shot(browser, "08-good-filter")


def test_more_like_this_and_the_keyboard(server, browser):
    browser.get(server.url + "/?index=photos&q=red")
    wait(browser, lambda b: len(cards(b)) > 0)
    seed = rows(browser)[0]
    button = cards(browser)[0].find_element(By.CSS_SELECTOR, "button.more")
    browser.execute_script("arguments[0].focus()", button)
    button.send_keys(Keys.ENTER)  # buttons answer the keyboard
    wait(browser, lambda b: query_of(b).get("like") == [str(seed)] and seed not in rows(b) and rows(b))
    assert "q" not in query_of(browser)
    shot(browser, "09-more-like-this")


def placeholder(browser) -> str:
    return browser.find_element(By.ID, "where").get_attribute("placeholder")


def test_the_filter_hint_names_columns_the_index_has(server, browser):
    """It said 'price < 20000 and colour == ...' on every index, a photo index included."""
    browser.get(server.url + RED_CAR)
    wait(browser, lambda b: "price" in placeholder(b))
    assert placeholder(browser) == "e.g. price < 100 and title == '\u2026'"
    browser.get(server.url + "/?index=photos")
    wait(browser, lambda b: placeholder(b) == "e.g. width > 500")
    Select(browser.find_element(By.ID, "index")).select_by_value("shop")  # another index: its own columns
    wait(browser, lambda b: "price" in placeholder(b) and b.find_element(By.CSS_SELECTOR, "input[value=product]")
         .is_selected())
    shot(browser, "12-filter-hint")


CARDS = """return [...document.querySelectorAll('#results .card')].map((c) => ({
  title: [...c.querySelectorAll('dt')].find((d) => d.textContent === 'title').nextElementSibling.textContent,
  text: c.querySelector('.text').textContent, src: c.querySelector('img').getAttribute('src'),
  box: getComputedStyle(c.querySelector('.thumb')).display !== 'none'}));"""


def titles(browser) -> set[str]:
    """The cards' titles, from their details, read in one step."""
    return set(browser.execute_script(
        "return [...document.querySelectorAll('#results .card')].map(c => {"
        "  const t = [...c.querySelectorAll('.fields dt')].find(d => d.textContent === 'title');"
        "  return t ? t.nextElementSibling.textContent : null; })"))


def test_exact_words_find_only_the_items_holding_them_and_the_mode_survives_a_reload(server, browser):
    browser.get(server.url + "/?index=demo")
    modes = wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, ".modes"))
    wait(browser, lambda b: modes.is_displayed())  # the demo shop has words: the choice is offered
    assert browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=hybrid]").is_selected()
    browser.find_element(By.XPATH, "//label[normalize-space()='Exact words']").click()
    box = browser.find_element(By.ID, "q")
    box.send_keys("red", Keys.ENTER)
    wait(browser, lambda b: titles(b) == RED and thumbnails_loaded(b))  # the fake model's meaning ranks them all
    assert query_of(browser)["mode"] == ["lexical"] and len(cards(browser)) == len(RED)
    assert "word score" in cards(browser)[0].text and "vector score" not in cards(browser)[0].text
    browser.refresh()
    wait(browser, lambda b: len(cards(b)) == len(RED) and titles(b) == RED)
    assert browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=lexical]").is_selected()
    shot(browser, "06-exact-words")
    browser.find_element(By.XPATH, "//label[normalize-space()='Words and meaning']").click()
    wait(browser, lambda b: len(cards(b)) == 12)  # words and meaning: the other products follow the red ones
    assert "mode" not in query_of(browser) and titles(browser) >= RED
    first = cards(browser)[0].text
    assert "word score" in first and "vector score" in first
    cards(browser)[0].find_element(By.CSS_SELECTOR, ".like").click()  # examples need meaning: not exact words
    browser.find_element(By.XPATH, "//label[normalize-space()='Exact words']").click()
    wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "input[name=mode][value=hybrid]").is_selected())
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_a_product_without_a_photo_is_a_text_card(server, browser):
    """A product whose photo was missing showed an empty picture box: its thumbnail was asked for, and refused."""
    browser.get(server.url + "/?index=gaps&q=a%20car&target=product")
    wait(browser, lambda b: len(cards(b)) == 12 and thumbnails_loaded(b))
    shown = browser.execute_script(CARDS)
    bare = [c for c in shown if not c["box"]]
    assert {c["title"] for c in bare} == PHOTOLESS and all(c["src"] is None and c["text"] for c in bare)
    assert all(c["src"] for c in shown if c["box"])
    shot(browser, "13-products-without-photos")


def test_on_a_phone_sized_screen_nothing_overflows(server):
    phone = start_browser(390, 844)
    try:  # a desktop window cannot be narrower than 500 px: emulate the phone's screen instead
        phone.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                              {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
        phone.get(server.url + RED_CAR)
        wait(phone, lambda b: len(cards(b)) == 12 and thumbnails_loaded(b))
        assert phone.execute_script("return window.innerWidth") == 390
        assert phone.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        shot(phone, "10-phone")
    finally:
        phone.quit()


def test_with_a_token_the_page_asks_for_it_once(tmp_path):
    build_index(tmp_path / "shop.idx", IndexConfig(texts=[CATALOG / "listings.csv"], text_column="description",
                                                   image_column="image", workers=0), encoder=FakeEncoder())
    with Server(str(tmp_path / "shop.idx"), "--token", "open sesame") as up:
        page = start_browser()
        try:
            page.get(up.url + RED_CAR)
            token = wait(page, lambda b: b.find_element(By.ID, "token") if b.find_element(By.ID, "token").is_displayed()
                         else None)
            shot(page, "11-token-asked")
            token.send_keys("wrong", Keys.ENTER)
            wait(page, lambda b: b.find_element(By.ID, "signin-error").is_displayed())
            token.clear()
            token.send_keys("open sesame", Keys.ENTER)
            wait(page, lambda b: len(cards(b)) == 12 and thumbnails_loaded(b))
            page.refresh()  # signed in for the session: not asked again
            wait(page, lambda b: len(cards(b)) == 12)
            assert not page.find_element(By.ID, "signin").is_displayed()
        finally:
            page.quit()
