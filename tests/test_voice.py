"""Voice queries: real speech made by espeak-ng at test time, heard by the offline Whisper base, searched as text.

The shop's case starts with a person saying "I want to buy a red car": the CLI, the API and the offline
models find the red car from the recording alone.
"""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

import xmodal
from conftest import CATALOG, env_with_tests_path
from system_tools import ESPEAK, require
from xmodal.search import voice

RED_CAR = "I want to buy a red car"
RED_CAR_PINYIN = "wo3 xiang3 yao4 mai3 yi2 liang4 hong2 se4 qi4 che1"  # 我想要买一辆红色汽车


def speak(path: Path, text: str, voice_name: str = "en-us") -> Path:
    require(ESPEAK)  # the tests (and fixtures) that speak skip without it, naming the package
    subprocess.run(["espeak-ng", "-v", voice_name, "-w", str(path), text], check=True, capture_output=True)
    return path


def write_wav(path: Path, samples: np.ndarray, rate: int = 16_000) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def video_without_sound(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(10):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("speech")
    rate = 16_000
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(300 * rate) / rate)
    garbage = (folder / "corrupt.wav")
    garbage.write_bytes(b"RIFF\x24\x08\x00\x00WAVE" + bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8)))
    (folder / "notes.txt").write_text("a red car, please\n")
    return {"red car": speak(folder / "red-car.wav", RED_CAR), "mandarin": speak(folder / "zh.wav", RED_CAR_PINYIN,
                                                                                    "cmn-latn-pinyin"),
            "silence": write_wav(folder / "silence.wav", np.zeros(2 * rate)),
            "five minutes": write_wav(folder / "long.wav", tone), "corrupt": garbage,
            "text file": folder / "notes.txt", "video": video_without_sound(folder / "no-sound.mp4")}


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("voice-shop") / "shop.idx"
    xmodal.build_index(out, xmodal.IndexConfig(texts=[CATALOG / "listings.csv"], text_column="description",
                                               image_column="image", model="offline", workers=0))
    return out


def xmodal_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from xmodal import cli; cli.run()", *args], capture_output=True,
                          text=True, timeout=300, env=env or env_with_tests_path())


def test_what_was_heard_says_its_seconds_are_the_time_hearing_took():
    """'heard (en, 7.6 s)' read as a 7.6 s recording; the seconds are how long hearing it took."""
    from dataclasses import replace

    heard = voice.Transcript("I want to buy a red car.", "en", 0.99, duration=2.4, seconds=7.6)
    assert heard.describe() == 'heard in 7.6 s (en): "I want to buy a red car."'
    assert replace(heard, translated=True).describe().startswith("heard in 7.6 s (en, translated): ")


@pytest.mark.parametrize("isa", ["AVX2", "AVX512"])
def test_what_is_heard_is_the_same_whatever_kernels_the_cpu_runs(isa):
    """The shipped recording heard as it is on every CPU: CTranslate2 made to run AVX2's kernels, or
    AVX-512's where this CPU has them (a README example prints what is heard, on any CPU)."""
    import platform

    from xmodal.indexer.models import inference

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("CT2_FORCE_CPU_ISA names x86 instruction sets; other CPUs run the README's example itself")
    if isa == "AVX512" and not inference.cpu_has("avx512bw"):
        pytest.skip("this CPU has no AVX-512: the AVX2 case covers it")
    script = ("from xmodal.search import voice; "
              "print(voice.transcribe('data/voice/red-car.wav').text)")
    heard = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                           cwd=Path(__file__).resolve().parents[1],
                           env={**env_with_tests_path(), "CT2_FORCE_CPU_ISA": isa})
    assert heard.returncode == 0, heard.stderr
    assert heard.stdout.strip() == "I want to buy a red car."


def test_saying_i_want_to_buy_a_red_car_finds_the_red_car(shop, speech):
    found = xmodal_cli("search", str(shop), "--audio", str(speech["red car"]), "--target", "product", "-k", "3",
                       "--json")
    assert found.returncode == 0, found.stderr
    heard = [line for line in found.stderr.splitlines() if re.match(r'heard in \d+\.\d s \(en\): "', line)]
    assert len(heard) == 1 and "red car" in heard[0].lower(), found.stderr
    result = json.loads(found.stdout)
    assert "red car" in result["query"]["transcript"].lower() and result["query"]["language"] == "en"
    assert result["hits"][0]["metadata"]["title"] == "Red sports car"
    typed = xmodal_cli("search", str(shop), result["query"]["transcript"], "--target", "product", "-k", "3", "--json")
    assert [h["row_id"] for h in json.loads(typed.stdout)["hits"]] == [h["row_id"] for h in result["hits"]]


def test_every_search_option_applies_to_a_spoken_query(shop, speech):
    found = xmodal_cli("search", str(shop), "--audio", str(speech["red car"]), "--where", "price < 10000",
                       "--dislike", "a blue car", "-k", "2", "--json")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)["hits"]
    assert all(h["metadata"]["price"] < 10000 for h in hits) and len(hits) == 2


def test_the_api_hears_a_path_the_bytes_or_samples(shop, speech):
    index = xmodal.open_index(shop)
    by_path = index.search(audio=speech["red car"], target="product", k=1)
    assert by_path.transcript is not None and "red car" in by_path.transcript.text.lower()
    assert by_path[0].metadata["title"] == "Red sports car"
    by_bytes = index.search(xmodal.Query(audio=speech["red car"].read_bytes(), target="product", k=1))
    samples = voice.read_audio(speech["red car"])
    by_samples = index.search(audio=samples, target="product", k=1)
    assert by_bytes.transcript.text == by_samples.transcript.text == by_path.transcript.text
    assert xmodal.transcribe(speech["red car"]).text == by_path.transcript.text
    typed = index.search(by_path.transcript.text, target="product", k=1)
    assert typed.transcript is None and typed[0].row_id == by_path[0].row_id


def test_mandarin_heard_is_searched_in_english_where_the_model_reads_english(shop, speech):
    found = xmodal_cli("search", str(shop), "--audio", str(speech["mandarin"]), "-k", "1", "--json")
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    query = result["query"]
    assert query["language"] == "zh" and any("\u4e00" <= ch <= "\u9fff" for ch in query["transcript"])
    assert query["translation"] == "red car" and result["hits"][0]["metadata"]["title"] == "Red sports car"
    assert 'searched as: "red car" (translated from zh)' in found.stderr.splitlines() and "note:" not in found.stderr


def test_mandarin_searched_as_heard_has_a_note_naming_the_models_that_read_it(shop, speech):
    found = xmodal_cli("search", str(shop), "--audio", str(speech["mandarin"]), "-k", "1", "--json",
                       "--translate", "off")
    assert found.returncode == 0, found.stderr
    query = json.loads(found.stdout)["query"]
    assert query["language"] == "zh" and query["translation"] is None
    notes = [line for line in found.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "reads English" in notes[0] and "xlm-roberta-base-ViT-B-32" in notes[0] \
        and "--translate auto" in notes[0], found.stderr


def test_chinese_heard_in_traditional_characters_is_searched_as_the_catalog_writes_it(tmp_path, speech):
    heard = xmodal.transcribe(speech["mandarin"])
    assert heard.language == "zh"
    listings = {"simplified": ["红色跑车，低里程", "蓝色自行车", "黄色咖啡杯"], "traditional": ["紅色跑車，低里程", "藍色自行車", "黃色咖啡杯"]}
    written = {}
    for script, texts in listings.items():
        table = tmp_path / f"{script}.csv"
        with open(table, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([["description"], *[[t] for t in texts]])
        out = tmp_path / f"{script}.idx"
        xmodal.build_index(out, xmodal.IndexConfig(texts=[table], text_column="description", model="offline"))
        written[script] = xmodal.open_index(out).search(audio=speech["mandarin"], target="text", k=1).transcript
    assert written["simplified"].simplified and "买" in written["simplified"].text and "買" not in written["simplified"].text
    assert not written["traditional"].simplified and written["traditional"].text == heard.text


@pytest.mark.parametrize("kind, words", [
    ("text file", "cannot be read as audio"), ("corrupt", "cannot be read as audio"),
    ("silence", "heard nothing in"), ("five minutes", "is 300 s long; a spoken query may be at most 30 s (--max-audio-seconds)"),
    ("video", "holds no audio track"),
])
def test_bad_audio_is_one_line_and_exit_2(shop, speech, kind, words):
    before = sorted(p.name for p in shop.rglob("*"))
    done = xmodal_cli("search", str(shop), "--audio", str(speech[kind]))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], \
        done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert sorted(p.name for p in shop.rglob("*")) == before


def test_audio_and_a_text_together_are_refused_before_anything_is_heard(shop, speech):
    done = xmodal_cli("search", str(shop), "a car", "--audio", str(speech["red car"]))
    assert done.returncode == 2 and done.stderr == "error: give one query: spoken (--audio) or a text, not both\n"


def test_without_the_voice_extra_one_line_names_it(shop, speech):
    code = ("import sys; sys.modules['faster_whisper'] = None\nfrom xmodal import cli\n"
            f"sys.argv = ['xmodal', 'search', {str(shop)!r}, '--audio', {str(speech['red car'])!r}]\ncli.run()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=env_with_tests_path())
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr == ("error: voice queries need faster-whisper, which is not installed; install it with "
                           "pip install 'xmodal[voice]'\n")


def test_the_offline_speech_model_is_joined_once_checked_and_rebuilt_when_cut_short(tmp_path, monkeypatch, speech):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = Path(voice.offline_model_folder())
    model = folder / "model.bin"
    assert model.stat().st_size == voice.OFFLINE_BYTES and not list(folder.parent.glob("*.tmp"))
    stamp = model.stat().st_mtime_ns
    assert voice.offline_model_folder() == str(folder) and model.stat().st_mtime_ns == stamp  # joined once
    with open(model, "r+b") as handle:
        handle.truncate(1000)  # a copy cut short (a full disk, a killed run)
    assert voice.offline_model_folder() == str(folder) and model.stat().st_size == voice.OFFLINE_BYTES
    heard = voice.SpeechRecognizer().transcribe(speech["red car"])
    assert "red car" in heard.text.lower()


def test_weights_that_do_not_match_their_sha256_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(voice, "OFFLINE_SHA256", "0" * 64)
    with pytest.raises(xmodal.ModelUnavailableError, match="do not match their recorded sha256"):
        voice.offline_model_folder()
    assert not any(p.is_dir() for p in (tmp_path / "cache" / "xmodal" / "speech").iterdir())  # nothing left


def test_a_hub_model_that_cannot_be_had_says_so_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(xmodal.ModelUnavailableError, match="use asr_model='offline'"):
        voice.SpeechRecognizer("small").load()
