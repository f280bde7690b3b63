"""`xmodal serve`: the search engine over HTTP (FastAPI), and the web page that uses it.

    POST /search              text | image (base64, or a multipart upload) | image_url | audio (base64, or a
                              multipart upload), like, dislike, strategy, add, subtract, where, target, k, weights,
                              fusion, dedup, mode, word_weight, word_fusion, index -> {mode, hits, language,
                              translation, took_ms, ...; a spoken query: transcript, note}
    GET  /items               the items, a page at a time (offset, limit, modality), with their row ids
    GET  /items/{row_id}      one item, as stored
    GET  /thumbnails/{row_id} a JPEG thumbnail of an indexed photo (ETag, Cache-Control)
    GET  /indexes             what each index holds: counts, model, filter fields, whether it has words (for
                              modes hybrid and lexical); whether voice search is on
    GET  /health              alive, and each index's generation (no token needed)
    GET  /metrics             Prometheus text: requests, latency histogram, errors
    GET  /                    the page; /static/* its assets, all served from here (no CDN)

With a token, every request but /health needs `Authorization: Bearer TOKEN` (or the
page's session cookie, set by POST /session). Every error is JSON {"error": "..."}, worded
in the service's terms: its fields and routes, not the Python API's names.

Image URLs (`image_url`) are fetched only by a service started with allow_url_queries
(`xmodal serve --allow-url-queries`): otherwise any client could make the server fetch
addresses only the server can reach (server-side request forgery).

A spoken query (`audio`) is heard by one speech model shared by every index (search/serve/speech.py),
then searched exactly as the text heard; the answer carries that text (`transcript`). A query in a language the
index's model does not read is searched in English where it can be translated (search/translate.py): the
answer says the query's `language` and the English searched (`translation`).
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Union, get_type_hints

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, create_model

from ...indexer.models import set_onnx_spinning
from ...indexer.errors import (CLI, ImageDecodeError, InvalidInputError, ModelMismatchError,
                               ModelUnavailableError, URLQueriesOffError, VoiceOffError, VoiceUnavailableError, Wording,
                               XmodalError, option)

from ..examples import split_weight_prefix
from ..query import Query as SearchQuery
from ..fetch import fetch_image, is_url
from ..voice import MAX_AUDIO_SECONDS, OFFLINE
from .batching import BatchingEncoder
from .live import LiveIndex
from .metrics import Metrics
from .speech import Voice
from .thumbnails import NotServed, Thumbnails

STATIC = Path(__file__).resolve().parent / "static"
MAX_UPLOAD_BYTES = 20 << 20
SESSION_COOKIE = "xmodal_session"
OPEN_ROUTES = {"/health"}  # answered without a token
PAGE_ROUTES = {"/", "/session"}  # the page loads, then asks for the token itself


class ImageTerm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="An image, base64-encoded (a data: URL works too).")


class ImageURLTerm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_url: str = Field(description="An http(s) URL of an image; the service fetches it if started to.")


Term = Union[StrictInt, StrictStr, ImageTerm, ImageURLTerm, list]  # strict: JSON true is not row 1
STRICT_FIELDS = {"word_weight"}
TERM_FIELDS = ("like", "dislike", "add", "subtract")


def _search_request_model() -> type[BaseModel]:
    """The JSON body of POST /search: the fields of search.Query (one spelling of a query, with its docs), in
    JSON's terms: images as base64 or image_url, terms as JSON values, and which index to ask."""
    hints = get_type_hints(SearchQuery)
    specs: dict[str, Any] = {}
    for name, doc in SearchQuery.field_docs().items():
        default = SearchQuery.__dataclass_fields__[name].default
        if name == "image":
            specs[name] = (str | None, Field(None, description="A query image, base64-encoded; or upload it as "
                                                               "multipart 'image'."))
            specs["image_url"] = (str | None, Field(None, description="A query image's http(s) URL, fetched by the "
                                                                      "service (only if started with "
                                                                      "--allow-url-queries)."))
        elif name == "audio":
            specs[name] = (str | None, Field(None, description="A spoken query, a recording base64-encoded; or "
                                                               "upload it as multipart 'audio'."))
        elif name in TERM_FIELDS:
            specs[name] = (list[Term], Field(default_factory=list, description=JSON_TERMS[name]))
        else:  # strict numbers: JSON true is not a word weight of 1
            specs[name] = (hints[name], Field(default, description=doc, strict=True if name in STRICT_FIELDS else None))
    specs["index"] = (str | None, Field(None, description="Which index, when the service has several "
                                                          "(default: the first)."))
    # extra="forbid": a misspelt field ('filter' for 'where') must not pass unseen
    return create_model("SearchRequest", __config__=ConfigDict(extra="forbid"), **specs)


JSON_TERMS = {"like": "Liked examples: row ids, references (sku:ABC), texts, {image: base64} or {image_url: URL}.",
              "dislike": "Disliked examples, likewise.",
              "add": "Terms added to the query: 'W:text', row ids, [w, term].",
              "subtract": "Terms subtracted from the query, likewise."}
SearchRequest = _search_request_model()
PLAIN_FIELDS = [name for name in SearchQuery.field_docs() if name not in ("image", "audio") and name not in TERM_FIELDS]


class ItemPage(BaseModel):
    index: str
    total: int = Field(description="Items of that kind the index holds.")
    offset: int
    limit: int
    items: list[dict[str, Any]] = Field(description="In row id order, as GET /items/{row_id} answers each.")


class HttpWording(Wording):
    """Errors in the service's terms: a request's fields as JSON, the routes that list what the Python API
    and the CLI list (GET /items for `xmodal list`). Options of indexing, done on the server, keep their
    command-line names."""

    ROUTES = {"list": "GET /items", "info": "GET /indexes", "search": "POST /search"}
    SERVER_LIMITS = {"max_audio_seconds"}  # set where the service starts, not by a request

    def option(self, name: str, value: str | None) -> str:
        if name in self.SERVER_LIMITS:
            return f"this service's limit, xmodal serve {CLI.option(name, value)}"
        if name not in SearchRequest.model_fields:
            return CLI.option(name, value)
        if value is None and SearchRequest.model_fields[name].annotation is bool:  # a switch named: turn it on
            return f'"{name}": true'
        if value is None or value.isupper():  # a placeholder such as FILE: the field alone
            return f'"{name}"'
        return f'"{name}": {json.dumps(value)}'

    def command(self, name: str, cli_args: str | None) -> str:
        return self.ROUTES.get(name) or CLI.command(name, cli_args)


HTTP = HttpWording()


@dataclass
class Service:
    indexes: dict[str, LiveIndex]
    token: str | None = None
    allow_url_queries: bool = False  # fetch image URLs named by clients (off: server-side request forgery)
    voice: Voice = field(default_factory=Voice)  # hears spoken queries, for every index
    metrics: Metrics = field(default_factory=Metrics)
    thumbnails: Thumbnails = field(default_factory=Thumbnails)
    # Searches at once. Each already spreads over the BLAS threads; more in parallel thrash (measured on
    # 100k, 2 cores, 8 clients: 16 searches/s unbounded, 28.5 one at a time, as fast as a lone client).
    search_slots: threading.Semaphore = field(
        default_factory=lambda: threading.Semaphore(max(1, (os.cpu_count() or 2) // 2)))

    def live(self, name: str | None) -> LiveIndex:
        if name is None:
            return next(iter(self.indexes.values()))
        if name not in self.indexes:
            raise LookupError(f"no index named {name!r}; this service has {', '.join(self.indexes)}")
        return self.indexes[name]


def create_app(indexes: dict[str, str | Path], token: str | None = None, device: str | None = None,
               batching: bool = True, encoder=None, allow_url_queries: bool = False, voice: bool | None = None,
               asr_model: str = OFFLINE, max_audio_seconds: float = MAX_AUDIO_SECONDS, runtime: str | None = None,
               precision: str | None = None) -> FastAPI:
    """The service for `indexes` (name -> folder); each index and each model load once, before any request.

    `allow_url_queries`: fetch the image URLs clients send (image_url). Only where every client may make
    the server fetch any address it can reach, its own network included.
    `voice`: True loads the speech model (`asr_model`, search.voice) now, so the first spoken query is as
    fast as the others, or fails with the reason it cannot; None loads it at the first spoken query; False
    refuses spoken queries. A recording may last `max_audio_seconds`. Queries are encoded the way each index
    records, or `runtime`/`precision` where named (open_index)."""
    if max_audio_seconds <= 0:
        raise InvalidInputError(f"{option('max_audio_seconds')} must be more than 0 (got {max_audio_seconds:g})")
    _one_thread_per_query()
    speech = Voice(voice, asr_model, device, max_audio_seconds)
    speech.start()  # before the indexes: a speech model that cannot be had fails the start at once
    service = Service({name: LiveIndex(name, Path(path), device, encoder, speech.speech, max_audio_seconds,
                                       (runtime, precision))
                       for name, path in indexes.items()}, token, allow_url_queries, voice=speech)
    _load_models(service, batching)
    app = FastAPI(title="xmodal", summary="Cross-modal search: texts, images, products, likes and dislikes.",
                  docs_url=None, redoc_url=None)  # the OpenAPI document is /openapi.json; no CDN-hosted viewer
    app.state.service = service
    _install_middleware(app, service)
    _install_routes(app, service)
    return app


def _one_thread_per_query() -> None:
    """Requests already run in parallel; faiss's OpenMP threads per query would only fight them and the
    BLAS threads of the text encoder (measured on 100k flat: 72 ms a query with 2 threads, 31 ms with 1).
    Likewise ONNX Runtime's threads must not spin between the small runs of the requests' texts."""
    import faiss

    faiss.omp_set_num_threads(1)
    set_onnx_spinning(False)


def _load_models(service: Service, batching: bool) -> None:
    """One encoder per model, shared by the indexes it built; texts batched across requests if `batching`."""
    shared: dict[Any, Any] = {}
    for live in service.indexes.values():
        index = live.current()
        key = (index.manifest.model.compatibility_key(), index.manifest.model.inference)
        if key not in shared:
            shared[key] = BatchingEncoder(index.encoder) if batching else index.encoder
            _warm_up(shared[key])
        live.share_encoder(shared[key])


def _warm_up(encoder) -> None:
    """Some models load parts on first use (the offline model's text tower): pay that before any request."""
    import logging

    try:
        encoder.encode_texts(["warm up"])
    except Exception as exc:  # the first request will meet it again, with its own error
        logging.getLogger("xmodal.serve").warning("encoding a first text failed: %s", exc)


def _install_middleware(app: FastAPI, service: Service) -> None:
    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        route = _route_of(request)
        if service.token and route not in OPEN_ROUTES | PAGE_ROUTES and not route.startswith("/static/") \
                and not _authorised(request, service.token):
            response: Response = _error(401, "this service needs a token: send Authorization: Bearer TOKEN")
        else:
            try:
                response = await call_next(request)
            except Exception:  # never a stack trace to the client; the server log has it
                import logging

                logging.getLogger("xmodal.serve").exception("request failed")
                response = _error(500, "internal error; see the server's log")
        service.metrics.observe(request.method, route, response.status_code, time.perf_counter() - started)
        return response


def _route_of(request: Request) -> str:
    path = request.url.path
    for prefix in ("/items/", "/thumbnails/", "/static/"):
        if path.startswith(prefix):
            return prefix + "{id}" if prefix != "/static/" else "/static/"
    return path if path in {"/", "/search", "/items", "/indexes", "/health", "/metrics", "/session", "/openapi.json"} \
        else "other"


def _authorised(request: Request, token: str) -> bool:
    given = request.headers.get("authorization", "")
    if given.lower().startswith("bearer ") and hmac.compare_digest(given[7:].strip(), token):
        return True
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie, token)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _status_of(exc: Exception) -> int:
    if isinstance(exc, LookupError):
        return 404
    if isinstance(exc, (URLQueriesOffError, VoiceOffError)):
        return 403
    if isinstance(exc, (ModelUnavailableError, VoiceUnavailableError)):  # the request is fine; this server lacks it
        return 503
    if isinstance(exc, (InvalidInputError, ModelMismatchError, ImageDecodeError, ValueError)):
        return 400
    return 400 if isinstance(exc, XmodalError) else 500


def _install_routes(app: FastAPI, service: Service) -> None:
    @app.exception_handler(XmodalError)
    async def xmodal_error(request: Request, exc: XmodalError):
        return _error(_status_of(exc), exc.worded(HTTP))

    @app.exception_handler(LookupError)
    async def not_found(request: Request, exc: LookupError):
        return _error(404, str(exc.args[0]) if exc.args else "not found")

    @app.exception_handler(404)
    async def no_route(request: Request, exc):
        return _error(404, f"no such page: {request.url.path}")

    @app.exception_handler(405)
    async def wrong_method(request: Request, exc):
        return _error(405, f"{request.method} is not allowed on {request.url.path}")

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        return _error(400, _request_problem(exc.errors()))

    @app.post("/search", summary="Search an index")
    def search(body: SearchRequest, request: Request) -> dict[str, Any]:
        return _search(service, body, None)

    @app.post("/search/upload", summary="Search by an uploaded image or recording (multipart: an 'image' or "
                                        "'audio' file, 'request' JSON)")
    async def search_upload(request: Request) -> dict[str, Any]:
        form = await request.form(max_part_size=MAX_UPLOAD_BYTES)
        uploads = {}
        for part, smaller in (("image", "a smaller image"), ("audio", "a shorter recording")):
            upload = form.get(part)
            if upload is None:
                continue
            if not hasattr(upload, "read"):
                return _error(400, f'bad request: the "{part}" part must be a file (a multipart part with a filename)')
            data = await upload.read(MAX_UPLOAD_BYTES + 1)
            if len(data) > MAX_UPLOAD_BYTES:
                return _error(413, f"the upload is over {MAX_UPLOAD_BYTES >> 20} MB; send {smaller}")
            uploads[part] = Upload(data, getattr(upload, "filename", None) or part)
        try:
            body = SearchRequest(**json.loads(form.get("request") or "{}"))
        except ValidationError as exc:
            return _error(400, _request_problem(exc.errors()))
        except (ValueError, TypeError) as exc:
            return _error(400, f"bad request: the 'request' field must be a JSON search request ({exc})")
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(_search, service, body, uploads.get("image"), uploads.get("audio"))

    @app.get("/items", summary="The indexed items, a page at a time, in row id order", response_model=ItemPage)
    def items(offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000),
              modality: Literal["image", "text", "product"] | None = None, index: str | None = None) -> ItemPage:
        live = service.live(index)
        total, rows = live.current().items(offset, limit, modality)
        return ItemPage(index=live.name, total=total, offset=offset, limit=limit, items=[_shown(r) for r in rows])

    @app.get("/items/{row_id}", summary="One indexed item")
    def item(row_id: int, index: str | None = None) -> dict[str, Any]:
        found = service.live(index).current()
        try:
            row = found.item(row_id)
        except KeyError:
            raise LookupError(f"no item with row id {row_id}; GET /items lists them") from None
        return _shown(row)

    @app.get("/thumbnails/{row_id}", summary="A JPEG thumbnail of an indexed photo")
    def thumbnail(row_id: int, request: Request, index: str | None = None) -> Response:
        try:
            found = service.thumbnails.get(service.live(index).current(), row_id)
        except NotServed as exc:
            return _error(404, str(exc))
        headers = {"ETag": found.etag, "Cache-Control": "private, max-age=86400"}
        if request.headers.get("if-none-match") == found.etag:
            return Response(status_code=304, headers=headers)
        return Response(found.jpeg, media_type="image/jpeg", headers=headers)

    @app.get("/indexes", summary="What each index holds, and whether spoken queries are heard")
    def indexes() -> dict[str, Any]:
        return {"indexes": [_describe(name, live) for name, live in service.indexes.items()],
                "voice": service.voice.describe(HTTP)}

    @app.get("/health", summary="Alive")
    def health() -> dict[str, Any]:
        return {"status": "ok", "indexes": {name: live.current().generation for name, live in service.indexes.items()}}

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        gauges = {"xmodal_items": {}, "xmodal_reloads_total": {}}
        for name, live in service.indexes.items():
            for modality, count in live.current().manifest.counts.items():
                gauges["xmodal_items"][(("index", name), ("kind", modality))] = count
            gauges["xmodal_reloads_total"][(("index", name),)] = live.reloads
        return PlainTextResponse(service.metrics.render(gauges), media_type="text/plain; version=0.0.4")

    @app.post("/session", summary="The page's sign-in: a valid token becomes a session cookie")
    async def session(request: Request) -> Response:
        try:
            given = str((await request.json()).get("token", ""))
        except ValueError:
            given = ""
        if not service.token:
            return JSONResponse({"ok": True})
        if not hmac.compare_digest(given, service.token):
            return _error(401, "wrong token")
        response = JSONResponse({"ok": True})
        response.set_cookie(SESSION_COOKIE, service.token, httponly=True, samesite="strict")
        return response

    @app.get("/", summary="The search page", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        allowed = {p.name: p for p in STATIC.iterdir() if p.is_file()}  # by name only: no path reaches disk
        if name not in allowed:
            return _error(404, f"no such page: /static/{name}")
        return FileResponse(allowed[name])


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """An item as the service shows it: without the content hashes kept for re-runs."""
    return {k: v for k, v in row.items() if k not in ("content_hash", "image_hash")}


def _request_problem(errors: list[dict]) -> str:
    """pydantic's first complaint about a request, in one line and in the request's terms."""
    first = errors[0] if errors else {}
    kind, loc = first.get("type"), [p for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    if kind == "json_invalid":  # its place is a character offset into the body, not a field
        detail = (first.get("ctx") or {}).get("error")
        return ("bad request: the body is not valid JSON" + (f" ({detail})" if detail else "") +
                '; send a JSON object, e.g. {"text": "a red car"}')
    if kind == "extra_forbidden" and len(loc) == 1:
        return f"bad request: unknown field {loc[0]!r}; a search request takes {', '.join(SearchRequest.model_fields)}"
    if len(loc) >= 2 and loc[0] in TERM_FIELDS and isinstance(loc[1], int):
        return (f"bad request: {loc[0]}[{loc[1]}] is not a term; use a row id, a text, "
                '{"image": BASE64} or {"image_url": URL}')
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    if kind == "model_attributes_type" and not where:
        return 'bad request: the body must be a JSON object, e.g. {"text": "a red car"}'
    return f"bad request: {where}: {first.get('msg', 'invalid')}" if where else "bad request"


@dataclass(frozen=True)
class Upload:
    """A file sent as a multipart part: its bytes, and the name the client gave it."""

    data: bytes
    filename: str


def _search(service: Service, body: SearchRequest, upload: Upload | None = None,
            audio_upload: Upload | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    live = service.live(body.index)
    index = live.current()
    target = body.target or index.default_target
    _check_one_query(body, upload, audio_upload)
    if body.text and is_url(body.text):
        raise InvalidInputError(f'the query text {body.text!r} is a URL; send it as "image_url" to search by the '
                                "image there")
    image = _query_image(service, body, upload.data if upload else None, index)
    reader = _Terms(service, index)  # images decoded and URLs fetched here, outside the search slots
    terms = {name: [reader.read(t, weighted=name in ("add", "subtract")) for t in getattr(body, name)]
             for name in TERM_FIELDS}
    asked = {name: getattr(body, name) for name in PLAIN_FIELDS}
    query = index.checked(SearchQuery(**{**asked, "target": target}, image=image, **terms))  # before it is heard
    transcript = _heard(service, body, audio_upload, index, query.translate == "speech")  # likewise outside the slots, one at a time
    heard = replace(query, text=transcript.text) if transcript is not None else query  # searched as that text, typed
    understood = index.understood(heard, transcript)  # its language, and its English where the model needs it
    if understood.query.text and isinstance(index.encoder, BatchingEncoder):  # encoded with the requests waiting
        index.encoder.encode_texts([understood.query.text])  # now; the search finds it in the cache
    with service.search_slots:  # its words searched as typed or heard and in English, as the CLI searches them
        hits = index.search_heard(query, transcript)
    note = index.language_note(hits, HTTP, body.translate)
    answer = {"index": live.name, "generation": index.generation, "target": target, "k": body.k,
              "mode": hits.mode,  # how the text was matched: hybrid, vector (meaning alone) or lexical (words alone)
              "count": len(hits), "hits": [h.to_dict() for h in hits], "language": understood.language,
              "translation": understood.translation.text if understood.translation else None}
    if transcript is not None:
        answer.update(transcript=transcript.to_dict())
    if transcript is not None or note:
        answer.update(note=note.removeprefix("note: ") if note else None)
    answer["took_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return answer


def _check_one_query(body: SearchRequest, upload: Upload | None, audio_upload: Upload | None) -> None:
    """One query per request: a text, an image or a recording (the others can be terms: add, like)."""
    given = [name for name, sent in (("text", body.text is not None), ("image", upload is not None or body.image),
                                     ("image_url", body.image_url), ("audio", audio_upload is not None or body.audio is not None))
             if sent]
    if {"image", "image_url"} <= set(given):
        raise InvalidInputError('give one query image: "image" (or an upload) or "image_url", not both')
    if len(given) > 1:
        raise InvalidInputError(f'give one query: "text", "image" (or "image_url") or "audio", not both '
                                f'"{given[0]}" and "{given[1]}"; a text or an image can join it as a term ("add", "like")')


def _query_image(service: Service, body: SearchRequest, upload: bytes | None, index):
    if body.image_url:
        return _fetched(service, body.image_url, index)
    if upload is not None:
        return _image(upload, index)
    return _image(_decode_base64(body.image), index) if body.image else None


def _heard(service: Service, body: SearchRequest, upload: Upload | None, index, translate: bool):
    """The transcript of the request's recording (an "audio" upload, or base64 in "audio"); None without one."""
    if upload is not None:
        audio, name = upload.data, f"the uploaded recording {upload.filename!r}"
    elif body.audio:
        audio, name = _decode_base64(body.audio, "recording"), 'the recording in "audio"'
    elif body.audio is not None:  # "audio": "" is a recording sent empty, not no recording
        audio, name = b"", 'the recording in "audio"'
    else:
        return None
    if len(audio) > MAX_UPLOAD_BYTES:
        raise InvalidInputError(f"the recording is over {MAX_UPLOAD_BYTES >> 20} MB; send a shorter one")
    return service.voice.hear(index, audio, name, body.language, translate, HTTP)


@dataclass
class _Terms:
    """HTTP terms: numbers (and all-digit strings) are row ids, other strings texts, images base64 or URLs.

    In add/subtract a term may carry a weight: [w, term], or 'W:text' as on the command line.
    A string never names a file, and a URL is fetched only where the service allows it: a request
    cannot make the server read from its disk, nor (unless allowed) from its network.
    """

    service: Service
    index: Any

    def read(self, term: Any, weighted: bool = False):
        if weighted:
            if isinstance(term, list):
                if len(term) != 2 or not isinstance(term[0], (int, float)):
                    raise InvalidInputError(f"a weighted term is [weight, term], not {term!r}")
                return float(term[0]), self.read(term[1])
            if isinstance(term, str):
                weight, term = split_weight_prefix(term)
                return weight, self.read(term)
            return 1.0, self.read(term)
        if isinstance(term, dict):  # inside a [weight, term] pair, not validated as a term yet
            term = _term_object(term)
        if isinstance(term, ImageTerm):
            return _image(_decode_base64(term.image), self.index)
        if isinstance(term, ImageURLTerm):
            return _fetched(self.service, term.image_url, self.index)
        if isinstance(term, bool) or not isinstance(term, (int, str)):  # a list, a number inside [w, term]
            raise InvalidInputError(f'{term!r} is not a term; use a row id, a text, {{"image": BASE64}} or '
                                    '{"image_url": URL}')
        if isinstance(term, int) or term.strip().isdigit():
            return int(term)
        if is_url(term):
            raise InvalidInputError(f'the text term {term!r} is a URL; send {{"image_url": ...}} to use the image '
                                    "there")
        return term


def _term_object(term: dict) -> ImageTerm | ImageURLTerm:
    for kind in (ImageTerm, ImageURLTerm):
        try:
            return kind(**term)
        except ValidationError:
            continue
    raise InvalidInputError(f'{json.dumps(term)} is not a term; use a row id, a text, {{"image": BASE64}} or '
                            '{"image_url": URL}')


def _fetched(service: Service, url: str, index):
    if not service.allow_url_queries:
        raise URLQueriesOffError('this service does not fetch image URLs: send the image itself ("image" as base64, '
                                 "or POST /search/upload), or start the service with xmodal serve "
                                 "--allow-url-queries, if every client may make it fetch any address it can reach")
    return fetch_image(url, min_side=index.query_min_side(), background=index.image_background)


def _decode_base64(data: str, what: str = "image") -> bytes:
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(f"the {what} is not valid base64; send the file's bytes base64-encoded") from None


def _image(data: bytes, index):
    from ...indexer.imaging import decode_image

    if len(data) > MAX_UPLOAD_BYTES:
        raise InvalidInputError(f"the image is over {MAX_UPLOAD_BYTES >> 20} MB; send a smaller one")
    try:
        return decode_image(data, "upload", min_side=index.query_min_side(), background=index.image_background)
    except ImageDecodeError as exc:
        raise InvalidInputError(f"the uploaded image cannot be read ({exc}); send a JPEG, PNG or WebP") from None


def _describe(name: str, live: LiveIndex) -> dict[str, Any]:
    index = live.current()
    manifest = index.manifest
    fields = {}
    for target, count in manifest.counts.items():
        if count:
            table = index._filter_table(target)
            fields[target] = {c: str(table.schema.field(c).type) for c in table.column_names if c != "row_id"}
    return {"name": name, "path": str(live.path.resolve()), "generation": manifest.generation, "counts": manifest.counts,
            "model": manifest.model.describe(), "identity": manifest.model.to_dict(),
            "targets": [t for t, n in manifest.counts.items() if n], "fields": fields,
            "words": index.has_words,  # a word index over every row: modes hybrid and lexical can be asked for
            "updated_at": manifest.updated_at, "search_placement": index.placement.describe()}
