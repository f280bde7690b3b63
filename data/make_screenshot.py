"""Make data/screenshots/serve-page.png, the README's picture of the search page.

Builds the demo catalog as products with the offline model, serves it, opens the red-car
search in headless Chromium (Debian's chromium + chromium-driver) and saves the page.

    python data/make_screenshot.py
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

DATA = Path(__file__).resolve().parent
XMODAL = [sys.executable, "-c", "from xmodal import cli; cli.app()"]
URL = "/?q=I%20want%20to%20buy%20a%20red%20car&target=product&where=price%20%3C%2020000"


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        shop = Path(scratch) / "shop.idx"
        subprocess.run(XMODAL + ["index", "--texts", str(DATA / "catalog/listings.csv"), "--text-column",
                                 "description", "--image-column", "image", "--model", "offline", "--out", str(shop)],
                       check=True, cwd=DATA.parent)
        server = subprocess.Popen(XMODAL + ["serve", str(shop), "--port", "8765"], cwd=DATA.parent)
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen("http://127.0.0.1:8765/health")
                    break
                except OSError:
                    time.sleep(0.2)
            options = webdriver.ChromeOptions()
            options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
            for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
                options.add_argument(flag)
            browser = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
            try:
                browser.get("http://127.0.0.1:8765" + URL)
                for _ in range(100):
                    if len(browser.find_elements(By.CSS_SELECTOR, "#results .card")) > 0:
                        break
                    time.sleep(0.1)
                time.sleep(1.0)  # thumbnails
                (DATA / "screenshots").mkdir(exist_ok=True)
                browser.save_screenshot(str(DATA / "screenshots" / "serve-page.png"))
            finally:
                browser.quit()
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
