"""A table's photo column holding http(s) URLs (every shop export): fetched from a real http.server on
loopback, cached in the index with their validators, re-fetched only when changed, each failure that row's."""
from __future__ import annotations

import csv
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from conftest import CATALOG, noise_image
from fakes import FakeEncoder
from test_cli import xmodal
from test_products import CountingEncoder, products
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.errors import ImageURLError
from xmodal.indexer.imaging import load_image
from xmodal.indexer.models import encode_images

PHOTOS = sorted(p.name for p in (CATALOG / "images").iterdir())


class Site:
    """Files by URL path, each with an ETag; every request logged as (path, status, conditional)."""

    def __init__(self):
        self.files: dict[str, tuple[bytes, str, str]] = {}
        self.log: list[tuple[str, int, bool]] = []
        self.down = False  # answer 503 to everything
        self.served = {"/page.html": (b"<html><body>no photo here</body></html>", "text/html", '"p"')}
        for name in PHOTOS:
            self.put(f"/images/{name}", (CATALOG / "images" / name).read_bytes())

    def put(self, path: str, body: bytes) -> None:
        self.served[path] = (body, "image/png", f'"{len(self.log)}-{hash(body) & 0xffffff:x}"')

    def fetched(self) -> list[str]:
        return [path for path, status, _ in self.log if status == 200]


def handler_for(site: Site):
    class Pages(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            conditional = "If-None-Match" in self.headers
            if site.down:
                return self.answer(503, b"down", "text/plain", conditional)
            found = site.served.get(self.path)
            if found is None:
                return self.answer(404, b"no such page", "text/plain", conditional)
            body, kind, etag = found
            if self.headers.get("If-None-Match") == etag:
                return self.answer(304, b"", None, conditional, ETag=etag)
            self.answer(200, body, kind, conditional, ETag=etag)

        def answer(self, status, body, kind, conditional, **headers):
            site.log.append((self.path, status, conditional))
            self.send_response(status)
            if kind:
                self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Pages


def serve(site: Site, host: str = "127.0.0.1"):
    server = ThreadingHTTPServer((host, 0), handler_for(site))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}"


@pytest.fixture
def site():
    site = Site()
    server, site.url = serve(site)
    yield site
    server.shutdown()
    server.server_close()


@pytest.fixture
def shop(tmp_path, site):
    """The demo catalog twice: on disk, and as a table whose photos are the same files by URL."""
    folder = tmp_path / "shop"
    shutil.copytree(CATALOG, folder)
    with open(folder / "listings.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    write_table(folder / "urls.csv", [{**r, "image": f"{site.url}/{r['image']}"} for r in rows])
    return folder


def write_table(path, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def build(out, table, encoder=None, **extra):
    config = IndexConfig(texts=[table], text_column="description", image_column="image", workers=0, **extra)
    return build_index(out, config, encoder=encoder or FakeEncoder())


def test_photo_urls_index_as_the_same_files_on_disk_do(shop, site, tmp_path):
    """A URL was read as a relative path: 'skipped .../http:/127.0.0.1:8765/a.jpg: unreadable'."""
    report = build(tmp_path / "urls.idx", shop / "urls.csv", allow_private_urls=True)
    build(tmp_path / "files.idx", shop / "listings.csv")
    assert not report.failures and report.counts["product"] == 12 and report.without_photo == 0
    assert (report.url_photos.fetched, report.url_photos.failed) == (12, 0)
    by_url, by_file = products(tmp_path / "urls.idx"), products(tmp_path / "files.idx")
    assert by_url.keys() == by_file.keys()
    for title, (_, photo, text, row) in by_url.items():
        assert np.array_equal(photo, by_file[title][1]) and np.array_equal(text, by_file[title][2])
        assert row.path == row.metadata["image"] == f"{site.url}/images/{by_file[title][3].path.rsplit('/', 1)[1]}"  # a hit names the URL, not the copy
        assert (row.width, row.height) == (by_file[title][3].width, by_file[title][3].height)
    assert sorted(site.fetched()) == sorted(f"/images/{name}" for name in PHOTOS)


def test_loopback_urls_are_refused_unless_allowed(shop, site, tmp_path):
    report = build(tmp_path / "idx", shop / "urls.csv")
    assert report.counts["product"] == 12 and report.without_photo == 12 and site.log == []  # nothing was asked
    reasons = {f.reason for f in report.failures}
    assert reasons == {"is refused: 127.0.0.1 is a loopback address, fetched only with allow_private_urls"}
    assert all(text is not None for _, _, text, _ in products(tmp_path / "idx").values())  # they keep their text


def test_the_cli_refuses_loopback_by_name_and_fetches_when_allowed(shop, site, tmp_path):
    command = ["index", "--texts", str(shop / "urls.csv"), "--text-column", "description", "--image-column",
               "image", "--out", str(tmp_path / "idx"), "--model", "python:fakes:make_encoder", "--workers", "0"]
    refused = xmodal(*command)
    assert refused.returncode == 0, refused.stderr
    assert f"skipped {site.url}/images/01-red-car.png (the photo of {shop / 'urls.csv'}:2): is refused: 127.0.0.1 " \
           "is a loopback address, fetched only with --allow-private-urls" in refused.stderr
    allowed = xmodal(*command, "--allow-private-urls")
    assert allowed.returncode == 0, allowed.stderr
    assert "photos by URL: 12 fetched, 0 unchanged, 0 failed" in allowed.stderr
    assert "12 products; skipped 0" in allowed.stdout
    again = xmodal("index", "--out", str(tmp_path / "idx"))  # unattended: as the run that allowed it
    assert again.returncode == 0, again.stderr
    assert "photos by URL: 0 fetched, 12 unchanged, 0 failed" in again.stderr
    assert "--allow-private-urls" in xmodal("index", "--help").stdout


def test_a_404_and_pages_that_are_not_photos_are_each_rows_failure(shop, site, tmp_path):
    site.served["/garbage.png"] = (b"\x89PNG\r\n\x1a\n but not really a PNG", "image/png", '"g"')
    with open(shop / "urls.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    broken = {"2": "/gone.png", "3": "/page.html", "4": "/garbage.png"}
    write_table(shop / "urls.csv", [{**r, "image": f"{site.url}{broken[r['id']]}"} if r["id"] in broken else r
                                    for r in rows])
    report = build(tmp_path / "idx", shop / "urls.csv", allow_private_urls=True)
    reasons = {(f.path.rsplit("/", 1)[1], f.line): f.reason for f in report.failures}
    assert reasons == {("gone.png", 3): "could not be fetched: the server returned HTTP 404 (Not Found)",
                       ("page.html", 4): "is a web page (text/html)",
                       ("garbage.png", 5): "not a recognised image format"}
    found = products(tmp_path / "idx")
    assert sum(photo is None for _, photo, _, _ in found.values()) == 3 and report.without_photo == 3
    assert found["Red sports car"][1] is not None


def test_a_rerun_asks_conditionally_and_fetches_and_encodes_nothing(shop, site, tmp_path):
    build(tmp_path / "idx", shop / "urls.csv", allow_private_urls=True)
    site.log.clear()
    encoder = CountingEncoder()
    report = build(tmp_path / "idx", shop / "urls.csv", encoder)
    assert site.fetched() == [] and len(site.log) == 12 and all(conditional for _, _, conditional in site.log)
    assert encoder.images == 0 and report.stats.encoded == 0 and not report.failures
    assert (report.url_photos.fetched, report.url_photos.held) == (0, 12)


def test_a_photo_changed_at_its_url_is_fetched_and_encoded_anew_keeping_its_row_id(shop, site, tmp_path):
    build(tmp_path / "idx", shop / "urls.csv", allow_private_urls=True)
    before = products(tmp_path / "idx")
    noise_image(7).save(tmp_path / "new.png")
    site.put("/images/01-red-car.png", (tmp_path / "new.png").read_bytes())  # a new photo, a new ETag
    site.log.clear()
    encoder = CountingEncoder()
    build(tmp_path / "idx", shop / "urls.csv", encoder)
    after = products(tmp_path / "idx")
    assert site.fetched() == ["/images/01-red-car.png"] and encoder.images == 1
    car = after["Red sports car"]
    assert car[0] == before["Red sports car"][0]  # the same row id: a like saved by it still works
    assert np.array_equal(car[1], encode_images(FakeEncoder(), [load_image(tmp_path / "new.png")])[0])
    assert not np.array_equal(car[1], before["Red sports car"][1])
    assert all(np.array_equal(after[t][1], before[t][1]) for t in before if t != "Red sports car")


class Interrupted(Exception):
    pass


class FailingEncoder(FakeEncoder):
    def encode_preprocessed(self, batch):
        raise Interrupted("the run dies after fetching")


def test_a_rerun_after_an_interrupted_run_reuses_what_it_fetched(shop, site, tmp_path):
    out = tmp_path / "idx"
    with pytest.raises(Interrupted):
        build(out, shop / "urls.csv", FailingEncoder(), allow_private_urls=True)
    assert len(site.fetched()) == 12
    site.log.clear()
    report = build(out, shop / "urls.csv", allow_private_urls=True)
    assert site.fetched() == [] and len(site.log) == 12  # each asked conditionally: 304
    assert report.counts["product"] == 12 and report.without_photo == 0 and not report.failures


def test_the_copies_go_with_the_table_that_linked_them(shop, site, tmp_path):
    build(tmp_path / "idx", shop / "urls.csv", allow_private_urls=True)
    (folder,) = (tmp_path / "idx" / "url-photos").iterdir()
    assert len(list(folder.iterdir())) == 24  # each photo and its validators
    build(tmp_path / "idx", shop / "listings.csv", replace_sources=True)
    assert list((tmp_path / "idx" / "url-photos").iterdir()) == []


def test_a_server_down_for_now_leaves_the_photos_held(shop, site, tmp_path):
    build(tmp_path / "idx", shop / "urls.csv", allow_private_urls=True)
    before = products(tmp_path / "idx")
    site.down = True
    report = build(tmp_path / "idx", shop / "urls.csv")
    assert not report.failures and report.without_photo == 0 and report.stats.encoded == 0
    after = products(tmp_path / "idx")
    assert all(np.array_equal(after[t][1], before[t][1]) for t in before)


def test_every_hop_is_checked_where_it_connects(monkeypatch):
    """A public address that redirects to a private one is refused at the redirect. Loopback stands in for
    both: 127.0.0.1 is taken for public here, 127.0.0.2 stays loopback."""
    from xmodal.indexer import fetch as fetching
    from xmodal.indexer.fetch import FetchLimits, fetch

    inner = Site()
    inner_server, inner_url = serve(inner, "127.0.0.2")
    outer = Site()
    outer_server, outer_url = serve(outer, "127.0.0.1")

    class Hop(handler_for(outer)):
        def do_GET(self):  # noqa: N802
            self.answer(302, b"", None, False, Location=f"{inner_url}/images/{PHOTOS[0]}")

    outer_server.RequestHandlerClass = Hop
    kind_of = fetching._kind_of
    monkeypatch.setattr(fetching, "_kind_of", lambda address: None if address == "127.0.0.1" else kind_of(address))
    try:
        assert fetch(f"{inner_url}/images/{PHOTOS[0]}", FetchLimits(allow_private=True)).body
        with pytest.raises(ImageURLError) as caught:
            fetch(f"{outer_url}/hop", FetchLimits(allow_private=False), subject="photo")
        assert caught.value.reason.startswith("is refused: 127.0.0.2 is a loopback address")
        assert [status for _, status, _ in outer.log] == [302] and len(inner.log) == 1  # the second hop never sent
    finally:
        for server in (inner_server, outer_server):
            server.shutdown()
            server.server_close()
