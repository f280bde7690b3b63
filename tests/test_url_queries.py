"""Query images by URL (search/fetch.py): fetched from a real http.server on loopback, through the
API, a real `xmodal search` process and a real `xmodal serve`, with each way a fetch can go wrong."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import CATALOG
from fakes import FakeEncoder
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.errors import ImageURLError
from xmodal.search import ImageURL, open_index
from xmodal.search.fetch import MAX_BYTES, fetch_image
from server import Server
from test_cli import xmodal

RED_CAR = (CATALOG / "images" / "01-red-car.png").read_bytes()
SLOW_S = 3  # the slow page answers after this; the tests wait 1 s for it
STREAM_CHUNK = b"\0" * (64 << 10)


class Pages(BaseHTTPRequestHandler):
    """Each way a query image URL can answer."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        page = getattr(self, "page_" + self.path.strip("/").replace("-", "_").replace(".", "_"), None)
        try:
            page() if page else self.answer(404, b"no such page", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what a size cap does

    def answer(self, status: int, body: bytes, kind: str | None, length: int | None = None, **headers):
        self.send_response(status)
        if kind:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def page_red_car_png(self):
        self.answer(200, RED_CAR, "image/png")

    def page_untyped_png(self):  # an object store's photo uploaded without its type
        self.answer(200, RED_CAR, "application/octet-stream")

    def page_hop(self):
        self.answer(302, b"", None, Location="/red-car.png")

    def page_loop(self):
        self.answer(302, b"", None, Location="/loop")

    def page_to_file(self):
        self.answer(302, b"", None, Location="file:///etc/passwd")

    def page_slow_png(self):
        time.sleep(SLOW_S)
        self.answer(200, RED_CAR, "image/png")

    def page_page_html(self):
        self.answer(200, b"<html><body><img src='/red-car.png'></body></html>", "text/html; charset=utf-8")

    def page_garbage_png(self):
        self.answer(200, b"\x89PNG\r\n\x1a\n but not really a PNG", "image/png")

    def page_declared_huge_png(self):  # says it is 1 GB: refused from the header, nothing read
        self.answer(200, RED_CAR, "image/png", length=1 << 30)

    def page_endless_png(self):
        """Over the real 20 MB cap, with no length announced, streamed a chunk at a time as produced."""
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Connection", "close")
        self.end_headers()
        for _ in range(MAX_BYTES // len(STREAM_CHUNK) + 8):
            self.wfile.write(STREAM_CHUNK)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    out = tmp_path_factory.mktemp("url") / "photos.idx"
    build_index(out, IndexConfig(images=[CATALOG / "images"], workers=0), encoder=FakeEncoder())
    return out


# ---- fetching -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", ["red-car.png", "untyped.png", "hop"])
def test_an_image_url_is_fetched_and_decoded(site, page):
    picture = fetch_image(f"{site}/{page}")
    assert picture.size == (256, 192) and picture.mode == "RGB"


@pytest.mark.parametrize("page, problem", [
    ("missing.png", "could not be fetched: the server returned HTTP 404 (Not Found); check the URL"),
    ("slow.png", "could not be fetched: no answer within 1 s; try again, or download it and give the file"),
    ("declared-huge.png", "is over the 20 MB limit; link a smaller image"),
    ("endless.png", "is over the 20 MB limit; link a smaller image"),
    ("page.html", "is a web page (text/html); link the image file itself"),
    ("garbage.png", "cannot be read (not a recognised image format); link a JPEG, PNG or WebP file"),
    ("loop", "redirects more than 5 times (a redirect loop?); link the image itself"),
])
def test_each_failed_fetch_is_one_line_naming_the_url_and_why(site, page, problem):
    url = f"{site}/{page}"
    with pytest.raises(ImageURLError) as caught:
        fetch_image(url, timeout=1)
    message = str(caught.value)
    assert message.startswith(f"query image {url} ") and problem in message and "\n" not in message


def test_a_body_over_a_smaller_cap_stops_being_read(site):
    with pytest.raises(ImageURLError, match=r"is over the 1 kB limit"):
        fetch_image(f"{site}/red-car.png", max_bytes=1024)


@pytest.mark.parametrize("url, problem", [
    ("file:///etc/passwd", "only http:// and https:// URLs are fetched, not file://; give a local image as a file"),
    ("ftp://127.0.0.1/x.png", "only http:// and https:// URLs are fetched, not ftp://"),
])
def test_other_schemes_are_refused(url, problem):
    with pytest.raises(ImageURLError, match=problem):
        fetch_image(url)


def test_a_redirect_to_another_scheme_is_not_followed(site):
    with pytest.raises(ImageURLError, match=r"redirects to file:///etc/passwd: only http:// and https:// are"):
        fetch_image(f"{site}/to-file")


def test_nothing_listening_is_one_line(site):
    from server import free_port

    with pytest.raises(ImageURLError, match=r"could not be fetched: .*; check the URL and the network"):
        fetch_image(f"http://127.0.0.1:{free_port()}/x.png", timeout=5)


# ---- the API, the CLI, the service ----------------------------------------------------------------------------

def test_the_api_searches_by_a_url_and_by_url_terms(site, photos):
    index = open_index(photos, encoder=FakeEncoder())
    best = index.search(image=f"{site}/red-car.png", k=1)[0]
    assert best.path.endswith("01-red-car.png") and best.score == pytest.approx(1.0, abs=1e-5)
    liked = index.search(like=[ImageURL(f"{site}/red-car.png")], k=1)[0]
    assert liked.path.endswith("01-red-car.png")  # a URL is not an indexed item: it may come back
    with pytest.raises(ImageURLError, match="HTTP 404"):
        index.search(text="a car", add=[(2.0, ImageURL(f"{site}/missing.png"))])


def test_cli_searches_by_an_image_url(site, photos):
    """--image https://... was read as a path: 'query image https:/upload... does not exist'."""
    done = xmodal("search", str(photos), "--image", f"{site}/red-car.png", "-k", "1", "--json")
    assert done.returncode == 0, done.stderr
    hit = json.loads(done.stdout)["hits"][0]
    assert hit["path"].endswith("01-red-car.png") and round(hit["score"], 3) == 1.0
    terms = xmodal("search", str(photos), "a car", "--add", f"3:{site}/hop", "--like", f"{site}/red-car.png",
                   "-k", "1", "--json")
    assert terms.returncode == 0, terms.stderr
    assert json.loads(terms.stdout)["hits"][0]["path"].endswith("01-red-car.png")


def test_cli_names_a_failed_fetch_in_one_line(site, photos):
    done = xmodal("search", str(photos), "--image", f"{site}/missing.png")
    assert done.returncode == 2
    assert done.stderr == (f"error: query image {site}/missing.png could not be fetched: the server returned "
                           "HTTP 404 (Not Found); check the URL\n")
    scheme = xmodal("search", str(photos), "--image", "file:///etc/passwd")
    assert scheme.returncode == 2 and "only http:// and https:// URLs are fetched" in scheme.stderr


def test_the_service_fetches_urls_only_when_started_to(site, photos):
    body = {"image_url": f"{site}/red-car.png", "k": 1}
    with Server(str(photos)) as closed:
        status, answer = closed.json("POST", "/search", body)
        assert status == 403 and "--allow-url-queries" in answer["error"]
        status, answer = closed.json("POST", "/search", {"like": [{"image_url": f"{site}/red-car.png"}]})
        assert status == 403 and "--allow-url-queries" in answer["error"]
    with Server(str(photos), "--allow-url-queries") as open_:
        status, answer = open_.json("POST", "/search", body)
        assert status == 200, answer
        assert answer["hits"][0]["path"].endswith("01-red-car.png") and round(answer["hits"][0]["score"], 3) == 1.0
        status, answer = open_.json("POST", "/search", {"text": "a car", "add": [[2, {"image_url": f"{site}/hop"}]],
                                                         "k": 1})
        assert status == 200 and answer["hits"][0]["path"].endswith("01-red-car.png")
        status, answer = open_.json("POST", "/search", {"image_url": f"{site}/missing.png"})
        assert status == 400 and answer["error"].endswith("returned HTTP 404 (Not Found); check the URL")
        status, answer = open_.json("POST", "/search", {"image_url": "file:///etc/passwd"})
        assert status == 400 and "only http:// and https://" in answer["error"]
        status, answer = open_.json("POST", "/search", {"like": [f"{site}/red-car.png"]})
        assert status == 400 and '{"image_url": ...}' in answer["error"]  # a string is a text: say how to fetch
