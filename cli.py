"""xmodal's command line: a thin layer over the indexer and search APIs.

Only this module prints or exits. Heavy libraries (torch, open_clip, faiss) are
imported inside commands, so `xmodal --help` and input errors answer at once.
"""
from __future__ import annotations

import gc
import json
import os
import re
import signal
import sys
import weakref
from pathlib import Path
from typing import List, NoReturn, Optional

import typer
from typer.core import TyperGroup

# The values of the options with choices come from the tables the code checks them against, so that --help
# lists exactly what is accepted. The faces load numpy and pyarrow for it (--help took 0.15 s on 2 cores, now
# 0.7 s), never torch, faiss or a model.
from .indexer import (AUTO, COLUMN_TYPES, DECODE_MODES, DEFAULT_MODEL, DEVICES, INDEX_TYPES, MAX_PIXELS, PRECISIONS,
                      RUNTIMES, VECTOR_DTYPES, one_of)
from .search import DEFAULT_FUSION, DEFAULT_STRATEGY, FUSIONS, STRATEGIES, TARGETS

# What Ctrl-C leaves behind, by command; "interrupted" alone for the others. `serve` is stopped instead.
INTERRUPTED = {"index": "interrupted; the last committed index is unchanged, and running the same command again "
                        "resumes from the work already encoded"}


class _Commands(TyperGroup):
    """Ctrl-C (a KeyboardInterrupt anywhere in a command, its imports included, or while its arguments are
    read) ends the command with one line and exit status 130; typer's own handling exits 130 without a word."""

    def make_context(self, info_name, args, parent=None, **extra):
        command = args[0] if args else None
        try:
            return super().make_context(info_name, args, parent, **extra)
        except KeyboardInterrupt:
            raise typer.Exit(_interrupted(command)) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise typer.Exit(_interrupted(ctx.invoked_subcommand)) from None


def _interrupted(command: str | None) -> int:
    """Say that `command` was interrupted (it has cleaned up by now); its exit status."""
    if command == "serve":  # stopped before it started serving: a stop like any other (see serve)
        typer.echo("stopped")
        _exit_quickly()
        return 0
    for bar in list(_BARS):  # with leave=False a closed bar clears its line: the error line is not written after it
        bar.close()
    typer.echo(f"error: {INTERRUPTED.get(command, 'interrupted')}", err=True)
    return 130


def _exit_quickly() -> None:
    """The process is about to end: Python's last garbage collection would only free memory the end frees
    anyway, and after torch and open_clip were imported it took 2-5 s here between the last line and the
    shell's prompt."""
    gc.freeze()


def _end_interrupted() -> NoReturn:
    """The end of an interrupted command, once it has cleaned up (workers stopped, journal written, Ray
    stopped) and said so: nothing is left for the interpreter's own exit to do, which took 2-5 s after
    torch was imported, and crashed (SIGSEGV, after the line was printed) when Ray had been interrupted
    while it started."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


app = typer.Typer(
    cls=_Commands,
    help="Cross-modal search: index image folders and text corpora, then search one with the other.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)

RUNTIME_HELP = (f"How the model runs on a CPU: {one_of((*RUNTIMES, AUTO))}, the fastest way measured to keep fp32's "
                "vectors (default: as the index records, else auto).")
PRECISION_HELP = (f"{one_of((*PRECISIONS, AUTO))} (default: as the index records, else auto); a precision whose "
                  "vectors fall outside the parity measured for the index's own is refused.")
DEVICE_HELP = f"{one_of(DEVICES)} (N: a GPU's number)."


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"xmodal {version('xmodal')}")
        except PackageNotFoundError:
            typer.echo("xmodal (not installed as a package)")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print xmodal's version and exit.")) -> None:
    """Cross-modal search: index image folders and text corpora, then search one with the other."""


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _inference_note(index) -> None:
    """Why the query encoder runs another way than the index's (a runtime not installed here), if it does."""
    encoder = index.loaded_encoder
    note = getattr(encoder, "inference_note", None) if encoder is not None else None
    if note:
        typer.echo(f"note: {note}", err=True)


def _run(action):
    """Turn xmodal's expected errors into one line and a non-zero exit, never a traceback (Ctrl-C: _Commands)."""
    from .indexer import XmodalError

    try:
        return action()
    except XmodalError as exc:
        _fail(exc.for_cli())


_BARS = weakref.WeakSet()  # progress bars on the terminal, closed before an interruption's line


def _tqdm_progress(label: str, total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="item", file=sys.stderr, dynamic_ncols=True, disable=None, leave=False)
    _BARS.add(bar)
    return bar


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


@app.command()
def index(
    images: List[Path] = typer.Argument(None, metavar="FOLDER", hidden=True),
    out: Path = typer.Option(..., "--out", "-o", metavar="INDEX", help="Index folder to write: new, empty, or an existing index."),
    texts: List[Path] = typer.Option(None, "--texts", metavar="FILE", help="Text corpus: .txt (a text a line), .csv, .tsv, .jsonl, .parquet. Repeatable."),
    text_column: Optional[str] = typer.Option(None, "--text-column", metavar="NAME", help="Column holding the text in tables (default: as recorded, else 'text')."),
    image_column: Optional[str] = typer.Option(None, "--image-column", metavar="NAME", help="Column of a table naming each row's photo (relative to the table, or absolute, or an http(s) URL, fetched into the index and re-fetched only when it changed): each row becomes one product holding its photo and its text."),
    allow_private_urls: Optional[bool] = typer.Option(None, "--allow-private-urls/--refuse-private-urls", help="Fetch photo URLs at private, loopback and link-local addresses (an intranet, localhost, a cloud's metadata service): only for a table you trust. Default: as recorded, else refused (the row's photo is a failure)."),
    id_column: Optional[str] = typer.Option(None, "--id-column", metavar="NAME", help="Column of a table holding each row's key (sku, id, handle): a row is the same item exactly when its key is, wherever its line moves (default: as recorded, else none: rows are known by their text and photo)."),
    encoding: Optional[str] = typer.Option(None, "--encoding", metavar="NAME", help="Encoding of the corpora named here (default: as recorded, else utf-8 with or without BOM), e.g. latin-1, cp1252, gb18030."),
    model: Optional[str] = typer.Option(None, "--model", "-m", metavar="SPEC", help=f"Model spec; `xmodal models` lists them (default: the index's model, else {DEFAULT_MODEL})."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", metavar="TAG|FILE", help="Weights tag or checkpoint file; 'none' for (seeded) random weights."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help=DEVICE_HELP),
    runtime: Optional[str] = typer.Option(None, "--runtime", metavar="NAME", help=RUNTIME_HELP),
    precision: Optional[str] = typer.Option(None, "--precision", metavar="NAME", help=PRECISION_HELP),
    batch_size: int = typer.Option(64, "--batch-size", min=1, metavar="N", help="Items encoded at once."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, metavar="N", help="Image decoding processes (default: one per core, up to 8; 0 decodes in this process)."),
    index_type: str = typer.Option("auto", "--index-type", metavar="TYPE", help=f"{one_of(INDEX_TYPES)} (auto: flat, exact, while that is fast, else ivf)."),
    memory_budget: Optional[str] = typer.Option(None, "--memory-budget", metavar="SIZE", help="Memory the search indexes may take, e.g. 4G: large collections then get compressed IVF codes (SQ8, PQ) re-ranked from the stored vectors; default: as recorded, else uncompressed."),
    vectors: Optional[str] = typer.Option(None, "--vectors", metavar="TYPE", help=f"How vectors are stored: {one_of(VECTOR_DTYPES)} (float16: half the disk and memory); default: as recorded, else float32."),
    max_pixels: int = typer.Option(MAX_PIXELS, "--max-pixels", min=1, metavar="N", help="Refuse images whose declared size is larger: decompression bombs."),
    decode: Optional[str] = typer.Option(None, "--decode", metavar="MODE", help=f"{one_of(DECODE_MODES)}: reduced decodes JPEGs no larger than the model's input (several times faster), exact every pixel. Default: as recorded, else reduced."),
    background: Optional[str] = typer.Option(None, "--background", metavar="COLOUR", help="What transparent photos (product cutouts) are laid on before they are encoded: white, black, a colour name or #RRGGBB. Default: as recorded, else white."),
    ray: bool = typer.Option(False, "--ray", help="Decode and encode on Ray (pip install 'xmodal[ray]'): alone, a local Ray with this machine's cores; --ray HOST:PORT joins a running cluster (ray start --head prints its address)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="HOST:PORT", help="The same as --ray HOST:PORT."),
    ray_actors: Optional[int] = typer.Option(None, "--ray-actors", min=1, metavar="N", help="Encoding actors on Ray, each holding its own copy of the model (default: one per GPU of the cluster, else one per CPU core; fewer if memory is short)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Try files that failed before, changed or not."),
    replace_sources: bool = typer.Option(False, "--replace-sources", help="Make the sources named here the index's whole set, dropping the others and their items."),
    na_values: Optional[str] = typer.Option(None, "--na-values", metavar="A,B,...", help="""Cells of the tables named here that mean a missing value, comma-separated, or a JSON list for markers holding a comma ('["n/a", "a, b"]'), matched ignoring case (default: as recorded, else NA,N/A,null,None,-,nan; empty cells always); '' leaves only empty cells."""),
    lexical_columns: Optional[str] = typer.Option(None, "--lexical-columns", metavar="A,B,...", help="The tables' columns searched as words beside each item's text and key, comma-separated; a number column named counts as its digits (default: as recorded, else every text column); '' for none."),
    column_types: Optional[str] = typer.Option(None, "--column-types", metavar="NAME=TYPE,...", help=f"Set columns' types instead of inferring them, e.g. price=float,zip=str (TYPE: {one_of(COLUMN_TYPES)}); every cell must convert. Default: as recorded; '' clears."),
    delimiter: Optional[str] = typer.Option(None, "--delimiter", metavar="CHAR", help="What separates the cells of the CSV and TSV tables named here: , ; | or tab (default: as recorded, else a CSV file's is sniffed among those, a TSV's is tab)."),
    decimal: Optional[str] = typer.Option(None, "--decimal", metavar="MARK", help="The decimal mark of the numbers in the CSV and TSV tables named here, '.' or ',' (12,5 is then 12.5); default: as recorded, else '.', or ',' for a ';'-separated table whose numbers are written so (the column lines say which)."),
) -> None:
    """Embed images and texts into one space and write a searchable index.

    FOLDER: image folders, searched recursively.

    Sources add up: naming a folder or corpus adds it to the index's sources and syncs it (new, changed and
    deleted files); the index's other sources are kept as they are. With no sources named, every recorded
    source is synced. Only what is new or changed is encoded, and an interrupted run resumes.
    """
    from .indexer import CLI, IndexConfig, build_index

    if index_type not in INDEX_TYPES:
        _fail(f"unknown --index-type {index_type!r}; use {one_of(INDEX_TYPES)}")
    config = IndexConfig(images=list(images or []), texts=list(texts or []), text_column=text_column,
                         image_column=image_column, id_column=id_column, encoding=encoding, model=model, pretrained=pretrained, device=device,
                         runtime=runtime, precision=precision, batch_size=batch_size, workers=workers, index_type=index_type, max_pixels=max_pixels,
                         retry_failed=retry_failed, replace_sources=replace_sources, vectors=vectors,
                         memory_budget=memory_budget, image_decode=decode, background=background,
                         engine="ray" if ray or ray_address else "local", ray_address=ray_address, ray_actors=ray_actors,
                         na_values=na_values, column_types=column_types, delimiter=delimiter, decimal=decimal,
                         allow_private_urls=allow_private_urls,
                         lexical_columns=None if lexical_columns is None else
                         [c.strip() for c in lexical_columns.split(",") if c.strip()])
    report = _run(lambda: build_index(out, config, progress=_tqdm_progress))
    if report.inference_note:
        typer.echo(f"note: {report.inference_note}", err=True)
    if report.calibration_note:
        typer.echo(f"note: {report.calibration_note}", err=True)
    where = f"on {report.device}" if report.device else "(not loaded: nothing to encode)"
    typer.echo(f"model: {report.model} {where}")
    failures = report.worded_failures(CLI)
    for failure in failures[:20]:
        typer.echo(f"skipped {failure.where()}: {failure.reason}", err=True)
    if len(failures) > 20:
        typer.echo(f"... and {len(failures) - 20} more (xmodal info {out} --failures)", err=True)
    for corpus, columns in report.columns.items():
        dialect = report.dialects.get(corpus)
        read = dialect.describe(Path(corpus).suffix.lower()) if dialect else None
        for column in columns:
            typer.echo(_column_line(Path(corpus).name + (f"; {read}" if read else ""), column), err=True)
    urls = report.url_photos
    if urls.fetched or urls.held or urls.failed:
        typer.echo(f"photos by URL: {urls.fetched} fetched, {urls.held} unchanged, {urls.failed} failed", err=True)
    stats = report.stats
    typer.echo(f"indexed {_held(report.counts, report.without_photo)}; {_skipped(failures)}; "
               f"{report.seconds:.1f} s, {report.items_per_second:.1f} items/s -> {report.path}")
    typer.echo(f"this run: encoded {stats.encoded}, reused {stats.reused}, resumed {stats.resumed}, "
               f"removed {stats.removed}, failed {stats.failed}{_run_notes(len(failures) - stats.failed, report.committed)}")
    if report.language_note:
        typer.echo(f"note: {report.language_note}", err=True)


def _run_notes(skipped_before: int, committed: bool) -> str:
    """'skipped N' counts all the index could not take; 'failed' what failed in this run: the rest, unchanged
    since they failed in an earlier run, are named apart so that the two counts add up."""
    notes = [f"{skipped_before} skipped as before: a file is retried once it changes, or with --retry-failed"
             ] if skipped_before > 0 else []
    notes += [] if committed else ["nothing changed"]
    return f" ({'; '.join(notes)})" if notes else ""


def _column_line(corpus: str, column) -> str:
    """How a run typed one column of a corpus it read: its type and nulls, and why a column of numbers is text."""
    kind = "no values" if column.type == "empty" else column.type + (" (set by --column-types)" if column.set else "")
    line = f"column {column.name} ({corpus}): {kind}, {_count(column.nulls, 'null')}"
    if column.first_text_line is not None:
        line += f"; mostly numbers, but line {column.first_text_line} holds {column.first_text_value!r} "
        line += _number_fix(column.first_text_number) if column.first_text_number else \
            "(if that means missing, add it to --na-values)"
    return line


def _number_fix(form: str) -> str:
    """What to do about a value that is a number written another way ('12,5' read with a decimal point)."""
    mark = {"decimal comma": ",", "decimal point": "."}.get(form)
    if mark:
        return f"(a number with a {form}: read them so with --decimal {mark})"
    return "(a number with grouped digits, which are not read as one: write it as 1234567)"


def _held(counts: dict[str, int], photoless: int = 0) -> str:
    """'12 images, 12 texts', and the products when there are any, with those held without their photo."""
    held = [_count(counts.get("image", 0), "image"), _count(counts.get("text", 0), "text")]
    if counts.get("product"):
        held.append(_count(counts["product"], "product") + (f" ({photoless} without a photo)" if photoless else ""))
    return ", ".join(held)


def _is_product_photo(failure) -> bool:
    """A product's photo that could not be read: the product is indexed with its text alone."""
    return failure.modality == "image" and failure.source is not None


def _skipped(failures) -> str:
    """What could not be read: a product photo is named as such, so that it does not read as a lost product."""
    if not failures:
        return "skipped 0"
    photos = sum(_is_product_photo(f) for f in failures)
    images = sum(f.modality == "image" for f in failures) - photos
    parts = [_count(images, "image")] if images else []
    if photos:
        parts.append(_count(photos, "product photo"))
    if len(failures) - images - photos:
        parts.append(_count(len(failures) - images - photos, "text row"))
    return f"skipped {len(failures)} ({', '.join(parts)})"


@app.command()
def search(
    index_dir: Path = typer.Argument(..., metavar="INDEX", hidden=True),
    query: Optional[str] = typer.Argument(None, metavar="QUERY", hidden=True),
    image: Optional[str] = typer.Option(None, "--image", metavar="FILE|URL", help="Search by this image instead of a text: a file, or an http(s) URL to fetch."),
    audio: Optional[Path] = typer.Option(None, "--audio", metavar="FILE", help="Search by voice: a recording (wav, flac, mp3, ogg/opus, m4a, webm) is heard, then searched as its text (extra: xmodal[voice])."),
    asr_model: str = typer.Option("offline", "--asr-model", metavar="MODEL", help="The speech model for --audio: offline (Whisper base from PyPI), a faster-whisper size (small, large-v3, ...; downloaded once) or a model folder."),
    language: Optional[str] = typer.Option(None, "--language", metavar="CODE", help="The spoken language for --audio (en, zh, ...; default: as heard)."),
    translate: str = typer.Option("auto", "--translate", metavar="auto|off|speech", help="For models that read English alone: auto turns a Chinese query (typed or heard) into English by dictionary; off searches as typed or heard; speech has the speech model translate --audio."),
    max_audio_seconds: float = typer.Option(30.0, "--max-audio-seconds", metavar="S", help="The longest recording --audio takes."),
    target: Optional[str] = typer.Option(None, "--target", "-t", metavar="KIND", help=f"What to return: {one_of(TARGETS)} (default: products where the index holds any, else images, else texts)."),
    k: int = typer.Option(10, "-k", "--top-k", metavar="N", help="How many hits."),
    where: Optional[str] = typer.Option(None, "--where", metavar="FILTER", help="Only items whose metadata pass, e.g. \"price < 20000 and colour == 'red'\"."),
    like: List[str] = typer.Option(None, "--like", metavar="ITEM", help="A liked example: a row id, a key (sku:A12, where sku is a table's --id-column), an image file or URL, or a text. Repeatable."),
    dislike: List[str] = typer.Option(None, "--dislike", metavar="ITEM", help="A disliked example, likewise. Repeatable."),
    strategy: str = typer.Option(DEFAULT_STRATEGY, "--strategy", metavar="NAME", help=f"How likes and dislikes score: {one_of(STRATEGIES)}."),
    add: List[str] = typer.Option(None, "--add", metavar="[W:]TERM", help="Add a term to the query: a text, an image file or URL, or a row id, with an optional weight (2:sunset). Repeatable."),
    sub: List[str] = typer.Option(None, "--sub", metavar="[W:]TERM", help="Subtract a term from the query, likewise. Repeatable."),
    weights: Optional[str] = typer.Option(None, "--weights", metavar="image=W,text=W", help="Products: the weight of the photo and of the description (default: by the query: a photo image=1,text=0; a text image=0.3,text=0.7)."),
    dedup: bool = typer.Option(False, "--dedup", help="Collapse near-duplicate hits (copies of one photo, the same text twice) into the best-ranked one."),
    fusion: str = typer.Option(DEFAULT_FUSION, "--fusion", metavar="NAME", help=f"Products: how part scores combine: {one_of(FUSIONS)} (zscore: standardised; sum: raw cosines)."),
    mode: Optional[str] = typer.Option(None, "--mode", metavar="MODE", help="How a text query matches: hybrid (its words and its meaning, fused), vector (its meaning alone) or lexical (the items holding each of its words). Default: hybrid where the index has words, else vector."),
    word_weight: Optional[float] = typer.Option(None, "--word-weight", metavar="W", help="Hybrid: the words' share of the score, 0 to 1 (default: by the kind of query: a code 0.7, a few words 0.8, a sentence 0.7: docs/search.md, \"Words and vectors\")."),
    word_fusion: str = typer.Option("relative", "--word-fusion", metavar="NAME", help="Hybrid: how the word and vector rankings fuse: relative (scores scaled to 0..1, weighted) or rrf (reciprocal ranks)."),
    as_json: bool = typer.Option(False, "--json", help="Print the hits as JSON: {query, target, k, count, hits}."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help=DEVICE_HELP),
    runtime: Optional[str] = typer.Option(None, "--runtime", metavar="NAME", help=RUNTIME_HELP),
    precision: Optional[str] = typer.Option(None, "--precision", metavar="NAME", help=PRECISION_HELP),
) -> None:
    """Search an index with a text, an image, liked and disliked items, or all of them.

    INDEX: an index folder written by `xmodal index`. QUERY: the text to search with (or use --image).
    Hits are ranked by cosine similarity (products: by the fusion of their photo's and their
    description's scores), fused with the query's words where the index has a word index (a query
    that is a key of --id-column comes first); equal scores rank by row id. Every hit shows its row
    id, for --like, and in brackets the parts of its score (image, text, vector, words: BM25).
    """
    if query is not None and image is not None:
        _fail("give a query text or --image FILE|URL, not both (add the other with --add)")
    parsed_weights = _parse_weights(weights) if weights is not None else None
    from .indexer import CLI
    from .search import Query, open_index, parse_cli_term

    request = _run(lambda: Query(
        text=query, image=image, audio=audio, language=language, translate=translate, target=target, k=k, where=where, strategy=strategy, weights=parsed_weights,
        fusion=fusion, dedup=dedup, mode=mode, word_weight=word_weight, word_fusion=word_fusion, like=[parse_cli_term(x)[1] for x in like or []],
        dislike=[parse_cli_term(x)[1] for x in dislike or []], add=[parse_cli_term(x) for x in add or []],
        subtract=[parse_cli_term(x) for x in sub or []]).checked())  # a bad option fails before the index opens

    def run():
        idx = open_index(index_dir, device=device, asr_model=asr_model, runtime=runtime, precision=precision)
        idx.max_audio_seconds = max_audio_seconds
        chosen = request.resolved(idx.default_target)
        return idx, chosen.target, idx.search(chosen)

    idx, target, hits = _run(run)
    _inference_note(idx)
    heard = hits.transcript
    if heard is not None:  # what was heard, before the hits: a wrong word explains a wrong hit
        typer.echo(heard.describe(), err=True)
    if hits.translation is not None:  # likewise what was searched in its place
        typer.echo(hits.translation.describe(), err=True)
    note = idx.language_note(hits, CLI, request.translate)
    if note:
        typer.echo(note, err=True)
    if as_json:
        asked = {"text": heard.text if heard else query, "image": image, "like": like or [], "dislike": dislike or [],
                 "add": add or [], "sub": sub or [], "where": where, "strategy": strategy, "weights": parsed_weights,
                 "fusion": fusion, "dedup": dedup, "mode": hits.mode, "word_weight": word_weight, "word_fusion": word_fusion, "language": hits.language,
                 "translation": hits.translation.text if hits.translation else None}
        if heard is not None:
            asked.update(audio=str(audio), transcript=heard.text, language=heard.language,
                         transcription=heard.to_dict())
        result = {"query": asked, "target": target, "k": k, "count": len(hits), "hits": [h.to_dict() for h in hits]}
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2, default=str))
        return
    for hit in hits:
        typer.echo(_hit_line(hit))
    if len(hits) < k:
        more = "that pass the filter" if where else "to show"
        if hits.mode == "lexical":
            more = "holding all of the query's words" + (" that pass the filter" if where else "")
        typer.echo(f"({_count(len(hits), 'hit')}: the index holds no more {target}s {more})", err=True)


def _hit_line(hit) -> str:
    """rank, score, kind, row id, then the path (whole: it is used) or the text, and the metadata."""
    shown = hit.path if hit.modality == "image" else _clip(hit.text, 60)
    if hit.scores:
        shown += "  [" + " ".join(f"{part} {value:.2f}" if part == "words" else f"{part} {value:+.3f}"
                                  for part, value in hit.scores.items()) + "]"
    metadata = {k: v for k, v in (hit.metadata or {}).items() if v is not None}  # a missing value is left out
    extra = "  " + ", ".join(f"{k}={v}" for k, v in metadata.items()) if metadata else ""
    return f"{hit.rank:>3}  {hit.score:+.4f}  {hit.modality:<7} #{hit.row_id:<5} {shown}{_clip(extra, 80)}"


def _parse_weights(text: str) -> dict[str, float]:
    weights = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            _fail(f"--weights takes image=W,text=W with numbers (got {text!r})")
    return weights


def _clip(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command()
def duplicates(
    index_dir: Path = typer.Argument(..., metavar="INDEX", hidden=True),
    modality: str = typer.Option("image", "--modality", metavar="KIND", help=f"{one_of(TARGETS)}."),
    threshold: Optional[float] = typer.Option(None, "--threshold", metavar="S", help="Cosine at which the model proposes a pair (default: 0.5 for images and products, 0.9 for texts); the content check then decides."),
    pixels: float = typer.Option(0.98, "--pixels", metavar="P", help="Photos: aligned pixel correlation a copy must reach (in the same colours and contrast too); 0 trusts the model alone."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of {keep, items, min_score}."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help=DEVICE_HELP),
) -> None:
    """Find near-duplicates: copies of one photo (resized, re-compressed, lightly cropped), the same text twice.

    INDEX: an index folder. Each group names the member to keep (the largest file, then the one with
    the most metadata) and the others; `xmodal remove INDEX --id ...` removes those you choose.
    """
    if modality not in TARGETS:
        _fail(f"unknown --modality {modality!r}; use {one_of(TARGETS)}")
    from .search import open_index

    index = _run(lambda: open_index(index_dir, device=device))
    groups = _run(lambda: index.duplicates(modality, threshold, pixels))
    if as_json:
        typer.echo(json.dumps([g.to_dict() for g in groups], indent=2))
        return
    for number, group in enumerate(groups, start=1):
        typer.echo(f"group {number}: keep #{group.keep} {_shown(index.item(group.keep))} "
                   f"(min cosine {group.min_score:.4f})")
        for row_id in group.items[1:]:
            typer.echo(f"    #{row_id:<6} {_shown(index.item(row_id))}")
    extra = sum(len(g.items) - 1 for g in groups)
    typer.echo(f"{_count(len(groups), 'group')} of near-duplicate {modality}s; {extra} could go", err=True)


def _shown(item: dict) -> str:
    return item["path"] if item["modality"] == "image" and item.get("path") else _clip(item.get("text"), 80)


@app.command()
def serve(
    index_dir: Path = typer.Argument(..., metavar="INDEX", hidden=True),
    more: List[str] = typer.Option(None, "--index", metavar="NAME=INDEX", help="Serve another index under a name. Repeatable."),
    host: str = typer.Option("127.0.0.1", "--host", metavar="ADDRESS", help="Address to listen on; anything but loopback needs --token."),
    port: int = typer.Option(8000, "--port", metavar="N", min=0, max=65535, help="Port to listen on."),
    token: Optional[str] = typer.Option(None, "--token", metavar="TOKEN", envvar="XMODAL_TOKEN", help="Require Authorization: Bearer TOKEN on every request but /health (or set XMODAL_TOKEN)."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help=DEVICE_HELP),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="Encode the texts of concurrent requests in one pass (default: on)."),
    allow_url_queries: bool = typer.Option(False, "--allow-url-queries", help="Fetch the image URLs requests name (image_url). Off by default: any client could make the server fetch addresses only it can reach."),
    voice: Optional[bool] = typer.Option(None, "--voice/--no-voice", help="Spoken queries (audio; extra: xmodal[voice]): --voice loads the speech model at start-up, so the first one is as fast as the others; --no-voice refuses them. Default: the model loads at the first spoken query."),
    asr_model: str = typer.Option("offline", "--asr-model", metavar="MODEL", help="The speech model for spoken queries: offline (Whisper base from PyPI), a faster-whisper size (small, large-v3, ...; downloaded once) or a model folder."),
    max_audio_seconds: float = typer.Option(30.0, "--max-audio-seconds", metavar="S", min=0.5, help="The longest recording a spoken query may be."),
    runtime: Optional[str] = typer.Option(None, "--runtime", metavar="NAME", help=RUNTIME_HELP),
    precision: Optional[str] = typer.Option(None, "--precision", metavar="NAME", help=PRECISION_HELP),
) -> None:
    """Serve indexes over HTTP: a JSON API and a search page, until stopped (Ctrl-C or SIGTERM).

    INDEX: an index folder, served under its folder's name; --index NAME=INDEX adds others.
    Each index and its model load once; a new commit by `xmodal index` is picked up within seconds.
    """
    loopback = host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
    if not loopback and not token:
        _fail(f"refusing to listen on {host} without --token: anyone who can reach it could search the index "
              "and see its photos; pass --token TOKEN (or set XMODAL_TOKEN), or listen on 127.0.0.1")
    named = {index_dir.name.removesuffix(".idx") or "index": index_dir}
    for entry in more or []:
        name, _, path = entry.partition("=")
        if not name or not path:
            _fail(f"--index takes NAME=INDEX (got {entry!r})")
        if name in named:
            _fail(f"two indexes are named {name!r}; give each --index a name of its own")
        named[name] = Path(path)
    _check_port_free(host, port)
    _stop_at_once_on_signals()
    try:
        from .search.serve import create_app
    except ImportError:
        _fail("xmodal serve needs its web parts; install them with pip install 'xmodal[serve]'")
    web = _run(lambda: create_app(named, token=token, device=device, batching=batching,
                                  allow_url_queries=allow_url_queries, voice=voice, asr_model=asr_model,
                                  max_audio_seconds=max_audio_seconds, runtime=runtime, precision=precision))
    import uvicorn

    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    typer.echo(f"serving {', '.join(f'{n} ({p})' for n, p in named.items())} on {where} (Ctrl-C stops)")
    _stop_quietly_on_signals()
    uvicorn.run(web, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)
    typer.echo("stopped")
    _exit_quickly()


# A service stopped by its operator (Ctrl-C, SIGINT to its process group, SIGTERM from systemd or docker
# stop) has ended normally: exit 0 and "stopped", whether it was already serving or still loading.


def _stop_at_once_on_signals() -> None:
    """While the indexes and models load there is nothing to finish or save: a stop ends the process
    there and then. (A KeyboardInterrupt raised somewhere inside an import or a library could be
    swallowed, or leave an import lock held that the text-batching thread then waited on for good.)"""

    def stop(signum, frame):
        os.write(sys.stdout.fileno(), b"stopped\n")  # not print: the main thread may be inside a print
        os._exit(0)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)


def _stop_quietly_on_signals() -> None:
    """Uvicorn finishes the requests in flight, then re-raises the signal that stopped it to the handler
    found before it started; with these, being stopped is a normal end (exit 0), not a death by signal."""
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, lambda *_: None)


def _check_port_free(host: str, port: int) -> None:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except socket.gaierror as exc:
            _fail(f"cannot listen on {host}: no such address here ({exc.strerror or exc}); give --host an address "
                  "of this machine, e.g. 127.0.0.1, or 0.0.0.0 for all")
        except OSError as exc:
            _fail(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port")


@app.command()
def info(
    index_dir: Path = typer.Argument(..., metavar="INDEX", hidden=True),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    failures: bool = typer.Option(False, "--failures", help="List the files and rows that could not be indexed, with why."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help=f"Where searches would scan: {DEVICE_HELP}"),
) -> None:
    """Show what an index holds, its sources, which model built it, and where searches scan its vectors.

    INDEX: an index folder.
    """
    from .indexer import CLI, IndexDir, accepted_ways, describe_background, describe_calibration, recorded_table
    from .search import choose_placement

    manifest = _run(lambda: IndexDir(index_dir).read_manifest())
    placement = _run(lambda: choose_placement(device))
    summary = {
        "path": str(index_dir.resolve()),
        "format_version": manifest.format_version,
        "generation": manifest.generation,
        "counts": manifest.counts,
        "failures": manifest.failures,
        "metric": manifest.metric,
        "model": manifest.model.to_dict(),
        "accepts": [w.describe() for w in accepted_ways(manifest.model.family, manifest.model.inference,
                                                        recorded_table(manifest.calibration))],
        "preprocessing": {"image_decode": manifest.settings.get("image_decode", "exact"),
                          "background": manifest.background},
        "ann": {m: {"kind": a.kind, **a.params} for m, a in manifest.ann.items()},
        "created_at": manifest.created_at,
        "updated_at": manifest.updated_at,
        "sources": [{**s.to_dict(), "identity": _identity(s).removeprefix("; ") or None} for s in manifest.sources],
        "segments": [s.to_dict() for s in manifest.segments],
        "words": {"segments": sum(1 for s in manifest.segments if s.words), **(manifest.settings.get("words") or {})},
        "last_run": manifest.last_run,
        "calibration": manifest.calibration or None,
        "search_placement": {"device": placement.device, "engine": placement.engine, "reason": placement.reason},
    }
    rows = []
    if failures:
        from .search import open_index

        rows = _run(lambda: open_index(index_dir).failures(CLI))
        summary["failed_files"] = [f.__dict__ for f in rows]
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    model = manifest.model
    typer.echo(f"index:    {summary['path']} ({manifest.generation}, format {manifest.format_version})")
    typer.echo(f"model:    {model.describe()} [{model.family}]; {model.describe_reads()}")
    typer.echo(f"encoding: {model.inference.describe()}; queries and updates may run "
               f"{', '.join(summary['accepts']) or model.inference.describe()}")
    if manifest.calibration:
        typer.echo(f"measured: {describe_calibration(manifest.calibration)}")
    typer.echo(f"items:    {_held(manifest.counts)}; {manifest.failures} skipped")
    for source in manifest.sources:
        typer.echo(f"source:   {source.path} ({source.kind}{_source_options(source)}){_identity(source)}")
        if source.columns:
            typer.echo(f"columns:  {', '.join(_column_summary(c) for c in source.columns)}")
    for modality, ann in summary["ann"].items():
        typer.echo(f"ann:      {modality}: {ann}")
    deleted = sum(s.deleted_count for s in manifest.segments)
    typer.echo(f"storage:  {_count(len(manifest.segments), 'segment')}, {_count(deleted, 'deleted row')} "
               f"awaiting compaction, vectors {manifest.settings.get('vectors', 'float32')}, "
               f"images decoded {manifest.settings.get('image_decode', 'exact')}, "
               f"transparency {describe_background(manifest.background)}")
    typer.echo(f"words:    {_words_summary(manifest)}")
    typer.echo(f"search:   {placement.describe()}")
    typer.echo(f"updated:  {manifest.updated_at}")
    run = manifest.last_run
    if run:
        before = manifest.failures - run.get("failed", 0)  # as `xmodal index` says it: the two counts add up
        typer.echo(f"last run: encoded {run.get('encoded', 0)}, reused {run.get('reused', 0)}, "
                   f"removed {run.get('removed', 0)}, failed {run.get('failed', 0)}"
                   f"{f' ({before} skipped as before)' if before > 0 else ''} in {run.get('seconds', 0)} s")
    for failure in rows:
        typer.echo(f"skipped:  {failure.where()}: {failure.reason}")


def _words_summary(manifest) -> str:
    """Which segments hold a word index, and what its words are made of."""
    held, total = sum(1 for s in manifest.segments if s.words), len(manifest.segments)
    if held < total:
        return f"in {held} of {_count(total, 'segment')}: the next `xmodal index` run adds the rest"
    columns = (manifest.settings.get("words") or {}).get("columns")
    made_of = "every text column" if columns is None else ", ".join(columns) or "no other column"
    return f"in every segment: item texts, keys and {made_of}"


def _identity(source) -> str:
    """What makes a row of a table the same item from one run to the next."""
    if source.kind != "texts":
        return ""
    if source.id_column:
        return f"; a row is known by its {source.id_column}"
    if source.image_column:
        return "; a row is known by its description and photo (no --id-column)"
    return "; a row is known by its text (no --id-column)"


def _source_options(source) -> str:
    """A source's reading options, as they would be given: ', text_column description, na_values N/A,-'."""
    shown = []
    for key, value in source.to_dict().items():
        if key in ("kind", "path", "fingerprint", "columns"):
            continue
        if key == "na_values":
            value = json.dumps(value, ensure_ascii=False) if any("," in v for v in value) else ",".join(value) or "''"
        elif key == "delimiter":
            value = "tab" if value == "\t" else repr(value)
        elif key == "column_types":
            value = ",".join(f"{name}={kind}" for name, kind in value.items())
        shown.append(f", {key} {value}")
    return "".join(shown)


def _column_summary(column: dict) -> str:
    """'price int', 'price float (2 nulls)', "note text (line 7 holds 'call us')", 'zip text (set)'."""
    notes = ["set"] if column.get("set") else []
    if column.get("nulls"):
        notes.append(_count(column["nulls"], "null"))
    if column.get("first_text_line") is not None:
        notes.append(f"line {column['first_text_line']} holds {column['first_text_value']!r}")
    return f"{column['name']} {column['type']}" + (f" ({'; '.join(notes)})" if notes else "")


@app.command("eval")
def eval_(
    dataset: Path = typer.Argument(..., metavar="DATASET", hidden=True),
    model: Optional[str] = typer.Option(None, "--model", "-m", metavar="SPEC", help=f"Model spec to evaluate (default: {DEFAULT_MODEL})."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", metavar="TAG|FILE", help="Weights tag or checkpoint file."),
    index_dir: Optional[Path] = typer.Option(None, "--index", metavar="INDEX", help="Evaluate an existing index (its vectors and ANN)."),
    ks: str = typer.Option("1,5,10", "-k", metavar="K,K,...", help="Cut-offs, comma-separated."),
    prompt: str = typer.Option("a photo of a {}", "--prompt", metavar="TEXT", help="Class prompt for labelled folders."),
    image_column: str = typer.Option("image", "--image-column", metavar="NAME", help="Captions file: image path column."),
    caption_column: str = typer.Option("caption", "--caption-column", metavar="NAME", help="Captions file: caption column."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help=DEVICE_HELP),
    runtime: Optional[str] = typer.Option(None, "--runtime", metavar="NAME", help=RUNTIME_HELP),
    precision: Optional[str] = typer.Option(None, "--precision", metavar="NAME", help=PRECISION_HELP),
    decode: str = typer.Option("reduced", "--decode", metavar="MODE", help=f"With --model: {one_of(DECODE_MODES)} (reduced: JPEGs decoded no larger than the model's input; exact: every pixel)."),
) -> None:
    """Measure retrieval quality: precision/recall/mAP and zero-shot accuracy, or Recall@K on captions.

    DATASET: a labelled folder (one subfolder per class) or a captions file (.csv/.jsonl).
    """
    try:
        cutoffs = tuple(sorted({int(x) for x in ks.split(",") if x.strip()}))
    except ValueError:
        cutoffs = ()
    if not cutoffs or min(cutoffs) < 1:
        _fail(f"-k takes whole numbers of at least 1, comma-separated (got {ks!r})")
    if model and index_dir:
        _fail("give --model or --index, not both: an index is evaluated with the model that built it")
    if "{}" not in prompt:
        _fail("--prompt must contain {} where the class name goes, e.g. 'a photo of a {}'")
    from .search import evaluate

    result = _run(lambda: evaluate(dataset, model=model, pretrained=pretrained, index=index_dir, ks=cutoffs,
                                   device=device, prompt=prompt, image_column=image_column,
                                   caption_column=caption_column, image_decode=decode, runtime=runtime,
                                   precision=precision))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return
    identity = result.model
    typer.echo(f"dataset:  {result.dataset} ({result.kind}; " +
               ", ".join(f"{v} {k}" for k, v in result.items.items()) + f"; {result.failures} unreadable)")
    typer.echo(f"model:    {identity['spec']}" + (f" ({identity['pretrained']})" if identity.get("pretrained") else ""))
    for name, figures in (("text->image", result.text_to_image), ("image->text", result.image_to_text),
                          ("ann vs exact", result.ann)):
        if figures:
            typer.echo(f"{name + ':':<13} " + "  ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))


@app.command("list")
def list_(
    index_dir: Path = typer.Argument(..., metavar="INDEX", hidden=True),
    modality: Optional[str] = typer.Option(None, "--modality", metavar="KIND", help=f"{one_of(TARGETS)} only."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array of items."),
) -> None:
    """List the items an index holds, with their row ids.

    INDEX: an index folder.
    """
    if modality not in (None, *TARGETS):
        _fail(f"unknown --modality {modality!r}; use {one_of(TARGETS)}")
    from .indexer import list_items

    rows = _run(lambda: list_items(index_dir, modality))
    if as_json:
        typer.echo(json.dumps([r.__dict__ for r in rows], ensure_ascii=False, indent=2, default=str))
        return
    width = max((len(row.modality) for row in rows), default=0)
    for row in rows:
        typer.echo(f"{row.row_id:>8}  {row.modality:<{width}}  {row.path or _clip(row.text, 100)}")


@app.command()
def remove(
    index_dir: Path = typer.Argument(..., metavar="INDEX", hidden=True),
    paths: List[Path] = typer.Option(None, "--path", metavar="PATH", help="A file, or every file under a folder. Repeatable."),
    ids: List[int] = typer.Option(None, "--id", metavar="ROW_ID", help="A row id (`xmodal list` shows them). Repeatable."),
    sources: List[Path] = typer.Option(None, "--source", metavar="PATH", help="A source (image folder or corpus) to drop, with its items. Repeatable."),
) -> None:
    """Remove items, or whole sources, from an index without re-indexing the rest.

    INDEX: an index folder. A removed file that is still in an indexed folder comes back on the next
    `xmodal index`; drop the folder itself with --source.
    """
    from .indexer import remove_items

    removed = _run(lambda: remove_items(index_dir, paths=list(paths or []), row_ids=list(ids or []),
                                        sources=list(sources or [])))
    typer.echo(f"removed {_count(len(removed), 'item')} from {index_dir}")


@app.command()
def compact(
    index_dir: Path = typer.Argument(..., metavar="INDEX", hidden=True),
) -> None:
    """Rewrite segments that hold deleted rows and merge small ones (commits do this on their own past thresholds).

    INDEX: an index folder. Also upgrades an index written by an older xmodal. Searches keep running meanwhile.
    """
    from .indexer import compact_index

    report = _run(lambda: compact_index(index_dir))
    upgraded = " (upgraded to the current format)" if report.upgraded else ""
    typer.echo(f"compacted {index_dir}{upgraded}: {_count(report.segments_before, 'segment')} -> "
               f"{report.segments_after}, {_count(report.deleted_before - report.deleted_after, 'deleted row')} "
               f"dropped, {_megabytes(report.bytes_written)} written in {report.seconds:.2f} s")


@app.command()
def models(
    contains: Optional[str] = typer.Argument(None, metavar="FILTER", hidden=True),
) -> None:
    """List the model names the registry knows, and the spec forms it accepts.

    FILTER: only names containing this (case-insensitive).
    """
    from .indexer import list_models

    names = [n for n in list_models() if not contains or contains.lower() in n.lower()]
    if not names:
        _fail(f"no model names contain {contains!r}; `xmodal models` lists them all")
    for name in names:
        typer.echo(name)
    typer.echo("also: hf-hub:ORG/REPO, local-dir:PATH, transformers:ORG/REPO|PATH, python:MODULE:FACTORY", err=True)


RAY_ADDRESS = re.compile(r"^(auto|ray://\S+|\S+:\d+)$")


def _ray_address_form(args: list[str]) -> list[str]:
    """`xmodal index ... --ray ADDRESS` (or --ray=ADDRESS) as --ray-address ADDRESS: the option's value is
    optional, which typer's options cannot be. A word after --ray that is not an address, or is a file or
    folder that exists, stays a source."""
    if not args or args[0] != "index":
        return args
    rewritten, rest = [], list(args)
    while rest:
        word = rest.pop(0)
        if word.startswith("--ray="):
            rewritten += ["--ray-address", word.removeprefix("--ray=")]
        elif word == "--ray" and rest and RAY_ADDRESS.match(rest[0]) and not Path(rest[0]).exists():
            rewritten += ["--ray-address", rest.pop(0)]
        else:
            rewritten.append(word)
    return rewritten


def run() -> None:
    """The `xmodal` command."""
    args = _ray_address_form(sys.argv[1:])
    try:
        app(args=args, prog_name="xmodal")
    except KeyboardInterrupt:  # while typer was still building the command line: nothing has started
        sys.exit(_interrupted(args[0] if args else None))
    except SystemExit as end:
        if end.code == 130:
            _end_interrupted()
        raise


if __name__ == "__main__":
    run()
