"""`xmodal serve` through a real server process on a free loopback port: every endpoint, the errors,
the token, attempts to read files it must not serve, following a commit, and stopping cleanly."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time

import httpx
import pytest
from PIL import Image

from conftest import CATALOG, REPO, env_with_tests_path
from fakes import FakeEncoder
from xmodal.indexer import IndexConfig, build_index
from server import Server, xmodal_command

pytest.importorskip("fastapi", reason="xmodal[serve] is part of .[dev]")
FAKE = "python:fakes:make_encoder"


def build(out, **config):
    build_index(out, IndexConfig(workers=0, **config), encoder=FakeEncoder())
    return out


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    shop = build(root / "shop.idx", texts=[CATALOG / "listings.csv"], text_column="description",
                 image_column="image")
    photos = build(root / "photos.idx", images=[CATALOG / "images"], texts=[CATALOG / "listings.csv"],
                   text_column="description")
    return shop, photos


@pytest.fixture(scope="module")
def server(indexes, tmp_path_factory):
    shop, photos = indexes
    with Server(str(shop), "--index", f"photos={photos}", log=tmp_path_factory.mktemp("log") / "serve.log") as up:
        yield up


def cli_search(*args: str) -> dict:
    done = subprocess.run(xmodal_command() + ["search", *args, "--json"], capture_output=True, text=True,
                          timeout=120, env=env_with_tests_path())
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


# ---- search -------------------------------------------------------------------------------------------------

def test_search_answers_exactly_what_the_cli_prints(server, indexes):
    shop, _ = indexes
    status, answer = server.json("POST", "/search", {"text": "I want to buy a red car", "target": "product", "k": 5})
    assert status == 200
    assert answer["hits"] == cli_search(str(shop), "I want to buy a red car", "--target", "product", "-k", "5")["hits"]
    assert answer["hits"][0]["metadata"]["title"] == "Red sports car"
    assert answer["index"] == "shop" and answer["count"] == 5 and answer["took_ms"] > 0


def test_search_with_filter_likes_algebra_and_weights_matches_the_cli(server, indexes):
    shop, _ = indexes
    body = {"text": "a car", "target": "product", "k": 4, "where": "price < 20000", "like": [0], "dislike": [1],
            "add": ["0.5:red"], "subtract": [[0.3, "blue"]], "weights": {"image": 0.7, "text": 0.3}}
    status, answer = server.json("POST", "/search", body)
    assert status == 200, answer
    expected = cli_search(str(shop), "a car", "--target", "product", "-k", "4", "--where", "price < 20000",
                          "--like", "0", "--dislike", "1", "--add", "0.5:red", "--sub", "0.3:blue",
                          "--weights", "image=0.7,text=0.3")
    assert answer["hits"] == expected["hits"]
    assert all(h["metadata"]["price"] < 20000 for h in answer["hits"])
    assert {h["row_id"] for h in answer["hits"]}.isdisjoint({0, 1})  # liked and disliked examples are not hits


def test_search_by_image_base64_and_multipart_upload(server, indexes):
    photo = CATALOG / "images" / "02-blue-car.png"
    status, by_json = server.json("POST", "/search", {"image": b64(photo), "index": "photos", "k": 3})
    assert status == 200
    assert by_json["hits"][0]["path"].endswith("02-blue-car.png")
    upload = httpx.post(server.url + "/search/upload", timeout=60,
                        files={"image": ("car.png", photo.read_bytes(), "image/png")},
                        data={"request": json.dumps({"index": "photos", "k": 3, "target": "text"})})
    assert upload.status_code == 200
    assert upload.json()["hits"][0]["metadata"]["title"] == "Blue family hatchback"
    data_url = "data:image/png;base64," + b64(photo)
    assert server.json("POST", "/search", {"like": [{"image": data_url}], "index": "photos", "k": 1})[1][
        "hits"][0]["path"].endswith("02-blue-car.png")


def test_default_target_is_what_the_index_holds(server):
    assert server.json("POST", "/search", {"text": "red car"})[1]["target"] == "product"
    assert server.json("POST", "/search", {"text": "red car", "index": "photos"})[1]["target"] == "image"


# ---- words and vectors (hybrid search) ----------------------------------------------------------------------

RED = {"APP-012", "CAR-001", "SHO-004", "MUG-009"}  # the demo shop's products whose words say red
ZH_TABLE = "sku,title,description\nZH-1,红色杯子,a cup for tea\nEN-1,red cup,a cup for coffee\nBO-1,红色 red bowl,a bowl\n"


@pytest.fixture(scope="module")
def word_indexes(tmp_path_factory):
    """The demo shop as docs/shop.md indexes it (keys, the offline model), and a shop whose titles are partly
    Chinese, both with their word indexes."""
    root = tmp_path_factory.mktemp("words")
    shop = root / "shop.idx"
    build_index(shop, IndexConfig(texts=[REPO / "data" / "shop" / "products.csv"], text_column="description",
                                  image_column="image", id_column="sku", model="offline", workers=0))
    (root / "zh.csv").write_text(ZH_TABLE, encoding="utf-8")
    chinese = root / "zh.idx"
    build_index(chinese, IndexConfig(texts=[root / "zh.csv"], text_column="description", id_column="sku",
                                     model="offline", workers=0))
    return shop, chinese


@pytest.fixture(scope="module")
def word_server(word_indexes, tmp_path_factory):
    shop, chinese = word_indexes
    with Server(str(shop), "--index", f"zh={chinese}", log=tmp_path_factory.mktemp("log") / "serve.log") as up:
        yield up


def skus(answer: dict) -> list[str]:
    return [hit["metadata"]["sku"] for hit in answer["hits"]]


def test_a_sku_typed_finds_its_product_first_by_its_words_and_says_how_it_matched(word_server, word_indexes):
    status, answer = word_server.json("POST", "/search", {"text": "SHO-004", "k": 3})
    assert status == 200, answer
    assert answer["mode"] == "hybrid" and skus(answer)[0] == "SHO-004"  # vectors alone put SHO-005 first
    scores = answer["hits"][0]["scores"]
    assert scores["words"] > 0 and {"vector", "image", "text"} <= set(scores)
    assert answer["hits"] == cli_search(str(word_indexes[0]), "SHO-004", "-k", "3")["hits"]
    vector = word_server.json("POST", "/search", {"text": "SHO-004", "k": 3, "mode": "vector"})[1]
    assert vector["mode"] == "vector" and "words" not in vector["hits"][0]["scores"]


def test_lexical_returns_exactly_the_products_whose_words_say_red(word_server):
    status, answer = word_server.json("POST", "/search", {"text": "red", "mode": "lexical"})
    assert status == 200, answer
    assert answer["mode"] == "lexical" and set(skus(answer)) == RED and answer["count"] == len(RED)
    assert all(set(hit["scores"]) == {"words"} and hit["scores"]["words"] > 0 for hit in answer["hits"])
    weighed = word_server.json("POST", "/search", {"text": "red", "word_weight": 1, "word_fusion": "rrf", "k": 4})[1]
    assert set(skus(weighed)) == RED  # words alone decide the order: the red products first


def test_a_chinese_query_searches_its_words_as_typed_and_in_english_as_the_cli_does(word_server, word_indexes):
    """The service searched only the English it translated to: a title in Chinese matched none of its words."""
    status, answer = word_server.json("POST", "/search", {"text": "红色", "index": "zh"})
    assert status == 200 and answer["translation"] == "red", answer
    assert answer["hits"] == cli_search(str(word_indexes[1]), "红色")["hits"]
    assert {hit["metadata"]["sku"]: hit["scores"]["words"] > 0 for hit in answer["hits"]} == \
        {"ZH-1": True, "EN-1": True, "BO-1": True}


def test_indexes_say_whether_an_index_has_words(word_server):
    listing = word_server.json("GET", "/indexes")[1]["indexes"]
    assert [(index["name"], index["words"]) for index in listing] == [("shop", True), ("zh", True)]


@pytest.mark.parametrize("body, words", [
    ({"text": "red", "mode": "fuzzy"}, "unknown \"mode\" 'fuzzy'; use one of hybrid, vector, lexical"),
    ({"text": "red", "word_weight": 2}, '"word_weight" must be a number from 0 (vectors alone) to 1 (words alone)'),
    ({"text": "red", "word_weight": True}, "bad request: word_weight: Input should be a valid number"),  # it was 1
    ({"text": "red", "word_fusion": "max"}, "unknown \"word_fusion\" 'max'; use one of relative, rrf"),
    ({"like": ["sku:SHO-004"], "mode": "lexical"}, '"mode": "lexical" finds words; give a text query'),
    ({"text": "red", "like": ["sku:SHO-004"], "mode": "lexical"}, 'cannot use "like"; use "mode": "hybrid"'),
])
def test_a_bad_mode_or_word_option_is_one_line_in_json_terms(word_server, body, words):
    status, answer = word_server.json("POST", "/search", body)
    assert status == 400 and words in answer["error"] and "\n" not in answer["error"], answer
    assert "--mode" not in answer["error"] and "mode=" not in answer["error"]


@pytest.mark.parametrize("body, status, words", [
    ({"text": "car", "where": "price <"}, 400, "filter"),
    ({"text": "car", "where": "__import__('os').system('touch /tmp/xmodal-pwned')"}, 400, "filter"),
    ({"text": "car", "k": 0}, 400, "\"k\" must be a whole number of at least 1"),
    ({"text": "car", "target": "video"}, 400, "unknown target"),
    ({"text": "car", "index": "nope"}, 404, "no index named 'nope'"),
    ({"image": "not base64 at all!"}, 400, "base64"),
    ({"image": base64.b64encode(b"\x89PNG\r\n\x1a\n truncated").decode()}, 400, "cannot be read"),
    ({"text": "car", "like": [9999]}, 400, "9999"),
    ({"text": "car", "k": "many"}, 400, "k"),
    ({"text": "car", "add": [[1, 2, 3]]}, 400, "weighted term"),
    ({"text": "car", "add": ["2:"]}, 400, "the term '2:' has a weight but nothing to weigh; write WEIGHT:TERM"),
    ({"text": "car", "subtract": ["0.5: "]}, 400, "has a weight but nothing to weigh"),
    ({"text": "car", "like": [True]}, 400, "like[0] is not a term"),  # it was row 1
    ({"text": "car", "like": [{"img": "x"}]}, 400, 'like[0] is not a term; use a row id, a text, {"image": BASE64}'),
    ({"text": "car", "add": [[2, {"img": "x"}]]}, 400, '{"img": "x"} is not a term'),
    ({"text": "car", "add": [[2, 1.5]]}, 400, "1.5 is not a term"),  # it was a 500
    ({"text": "car", "filter": "price < 10"}, 400, "unknown field 'filter'; a search request takes text, image,"),
    ({}, 400, ""),
])
def test_bad_requests_get_one_json_error(server, body, status, words):
    code, headers, data = server.call("POST", "/search", body)
    assert code == status, data
    assert headers["content-type"] == "application/json"
    error = json.loads(data)["error"]
    assert words.lower() in error.lower() and "Traceback" not in error and "\n" not in error
    assert not os.path.exists("/tmp/xmodal-pwned")


@pytest.mark.parametrize("body, words", [
    ({"text": "car", "like": [9999]}, "no item with row id 9999 in "),
    ({"text": "car", "target": "text"}, 'holds no texts (it holds 12 products); search "target": "product" instead, '
                                        "or index --texts FILE into it"),
    ({"dislike": [1]}, 'give a query text, "image" or "like" (or use "strategy": "best_score" to search away from '
                       "disliked items alone)"),
])
def test_errors_speak_http_and_json_not_python(server, body, words):
    """'indexer.edit.list_items() shows the ids' told an HTTP client to call Python."""
    code, answer = server.json("POST", "/search", body)
    assert code == 400 and words in answer["error"], answer
    for python in ("()", "indexer.", "target='", "image='", "strategy='"):
        assert python not in answer["error"]
    if 9999 in body.get("like", []):
        assert answer["error"].endswith("; GET /items shows the ids")


def test_a_body_that_is_not_json_says_so_in_json_terms(server):
    """It said 'bad request: 0: JSON decode error' (0: where the parser stopped, read as a field)."""
    code, _, data = server.call("POST", "/search", raw=b"{not json", headers={"Content-Type": "application/json"})
    error = json.loads(data)["error"]
    assert code == 400 and error.startswith("bad request: the body is not valid JSON (")
    assert error.endswith('; send a JSON object, e.g. {"text": "a red car"}') and ": 0:" not in error
    code, answer = server.json("POST", "/search", ["a red car"])
    assert code == 400 and answer["error"] == 'bad request: the body must be a JSON object, e.g. {"text": "a red car"}'


def test_malformed_json_and_oversized_upload(server):
    code, _, data = server.call("POST", "/search", raw=b"{not json", headers={"Content-Type": "application/json"})
    assert code == 400 and "error" in json.loads(data)
    big = httpx.post(server.url + "/search/upload", timeout=60,
                     files={"image": ("big.png", b"\0" * (21 << 20), "image/png")}, data={"request": "{}"})
    assert big.status_code == 413 and "smaller" in big.json()["error"]
    typo = httpx.post(server.url + "/search/upload", timeout=60, files={"image": ("a.png", b"x", "image/png")},
                      data={"request": json.dumps({"filter": "price < 10"})})
    assert typo.status_code == 400 and "\n" not in typo.json()["error"]
    assert "unknown field 'filter'" in typo.json()["error"]


def test_an_upload_over_the_pixel_limit_is_refused_from_its_header(server, tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("1", (20000, 16000)).save(huge, optimize=True)  # 320 MP, a few hundred kB on disk
    code, answer = server.json("POST", "/search", {"image": b64(huge), "index": "photos"})
    assert code == 400 and "megapixels" in answer["error"]


# ---- items, thumbnails, indexes, health, metrics, page ----------------------------------------------------

def test_item_by_row_id(server):
    status, item = server.json("GET", "/items/1")
    assert status == 200 and item["metadata"]["title"] == "Blue family hatchback" and item["row_id"] == 1
    assert server.json("GET", "/items/999")[0] == 404
    assert server.json("GET", "/items/abc")[0] == 400
    assert server.json("GET", "/items/0?index=photos")[1]["modality"] == "image"


def test_items_are_listed_a_page_at_a_time(server):
    status, page = server.json("GET", "/items?offset=10&limit=5")
    assert status == 200 and (page["index"], page["total"], page["offset"], page["limit"]) == ("shop", 12, 10, 5)
    assert [i["row_id"] for i in page["items"]] == [10, 11]
    assert page["items"][0] == server.json("GET", "/items/10")[1]  # each as GET /items/{row_id} shows it
    status, texts = server.json("GET", "/items?index=photos&modality=text&limit=2")
    assert status == 200 and texts["total"] == 12 and [i["modality"] for i in texts["items"]] == ["text", "text"]
    assert [i["row_id"] for i in texts["items"]] == [12, 13]
    for query, words in (("limit=0", "limit: Input should be greater than or equal to 1"),
                         ("offset=-1", "offset: Input should be greater than or equal to 0"),
                         ("limit=5000", "limit: Input should be less than or equal to 1000"),
                         ("modality=video", "modality: Input should be 'image', 'text' or 'product'")):
        code, answer = server.json("GET", f"/items?{query}")
        assert code == 400 and answer["error"] == f"bad request: {words}"
    assert server.json("GET", "/items?index=nope")[0] == 404


def test_thumbnail_is_a_cached_jpeg_with_etag(server):
    status, headers, data = server.call("GET", "/thumbnails/0")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert "max-age" in headers["cache-control"] and headers["etag"]
    picture = Image.open(__import__("io").BytesIO(data))
    assert picture.format == "JPEG" and max(picture.size) <= 320
    again = server.call("GET", "/thumbnails/0", headers={"If-None-Match": headers["etag"]})
    assert again[0] == 304 and again[2] == b""
    _, photos = server.json("POST", "/search", {"text": "x", "index": "photos", "target": "text", "k": 1})
    text_row = photos["hits"][0]["row_id"]
    assert server.json("GET", f"/thumbnails/{text_row}?index=photos") == (404, {"error": f"item {text_row} has no photo"})


@pytest.mark.parametrize("path", [
    "/thumbnails/../../../../etc/passwd", "/thumbnails/..%2F..%2F..%2Fetc%2Fpasswd",
    "/thumbnails/%252e%252e%252f%252e%252e%252fetc%252fpasswd", "/thumbnails/0/../../../etc/passwd",
    "/static/../../../etc/passwd", "/static/..%2Fapp.py", "/static/%2e%2e%2fapp.py", "/static/%252e%252e%252fapp.py",
    "/static/..%5c..%5capp.py", "/items/..%2F..%2Fetc%2Fpasswd", "/static//etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
    "/thumbnails/-1", "/thumbnails/1e3",
])
def test_traversal_attempts_read_nothing(server, path):
    status, headers, data = server.call("GET", path)
    assert status in (400, 404), (path, status)
    assert headers["content-type"] == "application/json"
    assert b"root:" not in data and b"import" not in data


def test_a_link_in_an_indexed_folder_pointing_out_of_it_is_not_served(tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    Image.new("RGB", (40, 30), (200, 30, 35)).save(secret / "private.png")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 30), (35, 70, 190)).save(photos / "inside.png")
    (photos / "escape.png").symlink_to(secret / "private.png")
    index = build(tmp_path / "linked.idx", images=[photos])
    with Server(str(index)) as up:
        rows = {h["path"].rsplit("/", 1)[1]: h["row_id"]
                for h in up.json("POST", "/search", {"text": "red", "k": 5})[1]["hits"]}
        assert set(rows) == {"inside.png", "escape.png"}  # indexed, as any photo in the folder
        assert up.call("GET", f"/thumbnails/{rows['inside.png']}")[0] == 200
        status, answer = up.json("GET", f"/thumbnails/{rows['escape.png']}")
        assert status == 404 and "outside its source folder" in answer["error"]


def test_indexes_health_metrics_openapi_and_page(server):
    status, listing = server.json("GET", "/indexes")
    shop, photos = listing["indexes"]
    assert (shop["name"], shop["counts"]["product"], shop["targets"]) == ("shop", 12, ["product"])
    assert shop["fields"]["product"]["price"] == "int64" and shop["model"].startswith(FAKE)
    assert photos["targets"] == ["image", "text"]
    assert shop["search_placement"] == "numpy on cpu (no GPU on this machine)"  # where its vectors are scanned
    assert server.json("GET", "/health")[1]["indexes"] == {"shop": shop["generation"], "photos": photos["generation"]}
    status, headers, text = server.call("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    metrics = text.decode()
    assert 'xmodal_requests_total{method="GET",route="/indexes",status="200"}' in metrics
    assert 'xmodal_request_seconds_bucket{route="/search",le="+Inf"}' in metrics
    assert 'xmodal_items{index="shop",kind="product"} 12' in metrics
    schema = server.json("GET", "/openapi.json")[1]
    assert {"/search", "/items", "/items/{row_id}", "/thumbnails/{row_id}", "/indexes", "/health", "/metrics"} <= set(schema["paths"])
    status, headers, page = server.call("GET", "/")
    assert status == 200 and b"<script src=\"/static/app.js\"" in page and b"http" not in page.split(b"<body")[0]
    assert server.call("GET", "/static/app.js")[0] == 200
    assert server.json("DELETE", "/search")[0] == 405


# ---- the token ------------------------------------------------------------------------------------------------

def test_with_a_token_everything_but_health_needs_it(indexes):
    shop, _ = indexes
    with Server(str(shop), "--token", "s3cret") as up:
        assert up.call("GET", "/health")[0] == 200
        for method, path, body in [("POST", "/search", {"text": "car"}), ("GET", "/items/0", None),
                                   ("GET", "/thumbnails/0", None), ("GET", "/indexes", None), ("GET", "/metrics", None),
                                   ("GET", "/openapi.json", None)]:
            status, answer = up.json(method, path, body)
            assert status == 401 and "Bearer" in answer["error"], path
            assert up.call(method, path, body, headers={"Authorization": "Bearer wrong"})[0] == 401
            assert up.call(method, path, body, headers={"Authorization": "Bearer s3cret"})[0] == 200, path
        assert up.call("GET", "/")[0] == 200  # the page loads, then asks for the token
        assert up.json("POST", "/session", {"token": "nope"})[0] == 401
        signed_in = httpx.post(up.url + "/session", json={"token": "s3cret"})
        cookie = signed_in.cookies.get("xmodal_session")
        assert signed_in.status_code == 200 and "httponly" in signed_in.headers["set-cookie"].lower()
        assert httpx.get(up.url + "/indexes", cookies={"xmodal_session": cookie}).status_code == 200


def serve_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(xmodal_command() + ["serve", *args], capture_output=True, text=True, timeout=120,
                          env=env_with_tests_path())


def test_listening_beyond_loopback_needs_a_token(indexes):
    done = serve_cli(str(indexes[0]), "--host", "0.0.0.0")
    assert done.returncode == 2
    assert done.stderr.startswith("error: refusing to listen on 0.0.0.0 without --token") and "Traceback" not in done.stderr


def test_a_taken_port_and_a_missing_index_are_one_line_each(indexes, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve_cli(str(indexes[0]), "--port", str(port))
    assert done.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    missing = serve_cli(str(tmp_path / "nothing.idx"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_a_port_out_of_range_and_an_unknown_host_are_named_without_a_traceback(indexes):
    for port in ("99999", "-5"):
        done = serve_cli(str(indexes[0]), "--port", port)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "Invalid value for '--port'" in done.stderr and ("65535" in done.stderr or " 0" in done.stderr)
    unknown = serve_cli(str(indexes[0]), "--host", "nosuchhost.invalid", "--token", "abc")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
    assert unknown.stderr.startswith("error: cannot listen on nosuchhost.invalid: no such address here")
    assert "--port" not in unknown.stderr  # the host is the problem


# ---- following commits, stopping ----------------------------------------------------------------------------

def test_a_commit_is_answered_within_seconds_and_no_request_fails(tmp_path):
    corpus = tmp_path / "notes.csv"
    corpus.write_text("text\na red apple\na blue mug\n")
    index = build(tmp_path / "notes.idx", texts=[corpus])
    with Server(str(index)) as up:
        statuses, stop = [], threading.Event()

        def hammer():
            while not stop.is_set():
                statuses.append(up.call("POST", "/search", {"text": "bicycle", "target": "text", "k": 1})[0])

        worker = threading.Thread(target=hammer)
        worker.start()
        try:
            corpus.write_text("text\na red apple\na blue mug\na green bicycle\n")
            added = subprocess.run(xmodal_command() + ["index", "--out", str(index), "--model", FAKE],
                                   capture_output=True, text=True, timeout=120, env=env_with_tests_path())
            assert added.returncode == 0, added.stderr
            deadline, top = time.monotonic() + 10, None
            while time.monotonic() < deadline:
                top = up.json("POST", "/search", {"text": "bicycle", "target": "text", "k": 1})[1]["hits"][0]
                if top["text"] == "a green bicycle":
                    break
                time.sleep(0.2)
        finally:
            stop.set()
            worker.join()
        assert top["text"] == "a green bicycle"
        assert statuses and set(statuses) == {200}
        assert 'xmodal_reloads_total{index="notes"} 1' in up.call("GET", "/metrics")[2].decode()


def test_sigterm_finishes_the_request_in_flight_then_exits_0(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 30), (200, 30, 35)).save(photos / "red.png")
    progress = tmp_path / "progress"
    progress.write_text("")
    slow_env = {"FAKE_PROGRESS_FILE": str(progress)}
    env = {**env_with_tests_path(), **slow_env}
    built = subprocess.run(xmodal_command() + ["index", str(photos), "--out", str(tmp_path / "slow.idx"),
                                               "--model", "python:fakes:make_slow_encoder", "--workers", "0"],
                           capture_output=True, text=True, timeout=120, env=env)
    assert built.returncode == 0, built.stderr
    upload = (photos / "red.png").read_bytes()
    with Server(str(tmp_path / "slow.idx"), env=slow_env) as up:
        answer = {}
        asking = threading.Thread(target=lambda: answer.update(response=httpx.post(
            up.url + "/search/upload", files={"image": ("red.png", upload, "image/png")},
            data={"request": "{}"}, timeout=30)))
        asking.start()
        time.sleep(0.1)  # the slow encoder takes 0.2 s per image: the request is in flight
        returncode = up.stop()
        asking.join()
    assert answer["response"].status_code == 200
    assert answer["response"].json()["hits"][0]["path"].endswith("red.png")
    assert returncode == 0


def test_a_failure_inside_the_server_is_a_json_500_without_its_details(indexes):
    from fastapi.testclient import TestClient

    from xmodal.search.serve.app import create_app

    class BrokenEncoder(FakeEncoder):
        def encode_texts(self, texts):
            raise RuntimeError("secret detail of the failure")

    client = TestClient(create_app({"shop": indexes[0]}, encoder=BrokenEncoder()), raise_server_exceptions=False)
    answer = client.post("/search", json={"text": "car"})
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error; see the server's log"}
    assert 'xmodal_errors_total{route="/search"} 1' in client.get("/metrics").text
