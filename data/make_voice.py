"""Make data/voice/*.wav, the spoken queries the docs search with (Debian's espeak-ng: apt-get install espeak-ng).

    python data/make_voice.py

red-car.wav: "I want to buy a red car" (en-us). red-car-zh.wav: the same in Mandarin, 我想要买一辆红色汽车,
spoken from pinyin (espeak-ng's cmn voice reads pinyin better than characters).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

VOICE = Path(__file__).resolve().parent / "voice"
SAID = {"red-car.wav": ("en-us", "I want to buy a red car"),
        "red-car-zh.wav": ("cmn-latn-pinyin", "wo3 xiang3 yao4 mai3 yi2 liang4 hong2 se4 qi4 che1")}


def main() -> None:
    VOICE.mkdir(exist_ok=True)
    for name, (voice, text) in SAID.items():
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(VOICE / name), text], check=True)
        print(f"wrote {VOICE / name}")


if __name__ == "__main__":
    main()
