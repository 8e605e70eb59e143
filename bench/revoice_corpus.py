#!/usr/bin/env python
"""A share of a corpus's training utterances spoken again by other voices; sentences and evaluation splits unchanged.

The controlled trial of new voices: a corpus built with another engine would draw other sentences and voices for
every split, so its figures could not be set beside the old corpus's. Here only the chosen training utterances
change voice (each a random voice and style of `--engine`, jittered as `build_corpus` does), so a model trained on
the result is measured on the very `dev` and `test_*` utterances of the original.

    python bench/revoice_corpus.py --corpus_dir demo/corpus --output_dir bench/work/corpus_festival20 \
        --engine festival --fraction 0.2
"""

import argparse
import io
import json
import logging
import random
import sys
from multiprocessing import Pool
from pathlib import Path

import soundfile
from datasets import Audio, Dataset, DatasetDict
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechseq.data import load_corpus  # noqa: E402
from speechseq.data.corpus import (SAMPLING_RATE, available_engines, prepare_engines, revoice_plan,  # noqa: E402
                                    synthesize)

logger = logging.getLogger("bench.revoice_corpus")


def _speak(item: tuple) -> tuple[int, bytes | None, float]:
    index, text, voice, seed = item
    try:
        audio = synthesize(text, voice, random.Random(seed))
    except ValueError:  # more than the engine speaks at once: the utterance keeps its voice
        return index, None, 0.0
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, SAMPLING_RATE, format="FLAC", subtype="PCM_16")
    return index, buffer.getvalue(), len(audio) / SAMPLING_RATE


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus_dir", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--engine", default="festival", help="whose voices speak the chosen utterances")
    parser.add_argument("--fraction", type=float, default=0.2, help="share of the training utterances revoiced")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.engine not in available_engines():
        raise ValueError(f"{args.engine} is not installed here (installed: {available_engines()})")
    if not 0 < args.fraction <= 1:
        raise ValueError(f"--fraction must be in (0, 1], got {args.fraction}")

    corpus = load_corpus(args.corpus_dir)
    rows = corpus["train"].to_list()
    voice_of = revoice_plan(len(rows), {args.engine: args.fraction}, args.seed)  # as build_corpus(revoice=) draws
    chosen = sorted(voice_of)
    items = [(i, rows[i]["text"], voice_of[i], args.seed * 1_000_003 + i) for i in chosen]
    prepare_engines([args.engine])
    kept = []
    with Pool(2) as pool:
        for index, flac, duration in tqdm(pool.imap(_speak, items, chunksize=4), total=len(items), desc="revoicing"):
            if flac is None:
                kept.append(rows[index]["id"])
                continue
            rows[index].update(audio={"bytes": flac, "path": f"{rows[index]['id']}.flac"}, engine=args.engine,
                               voice=voice_of[index].id, duration=duration)  # fmt: skip
    if kept:
        logger.warning("%d utterances too long for %s kept their voices, e.g. %s", len(kept), args.engine, kept[0])
    revoiced = DatasetDict({**corpus, "train": Dataset.from_list(rows).cast_column("audio", Audio(decode=False))})
    output = Path(args.output_dir)
    revoiced.save_to_disk(str(output / "dataset"))
    stats = dict(source=args.corpus_dir, engine=args.engine, fraction=args.fraction, seed=args.seed,
                 revoiced=len(chosen) - len(kept), train_hours=sum(r["duration"] for r in rows) / 3600)  # fmt: skip
    (output / "revoiced.json").write_text(json.dumps(stats, indent=2))
    logger.info("revoiced %d of %d training utterances with %s: %.2f h of training audio", stats["revoiced"],
                len(rows), args.engine, stats["train_hours"])  # fmt: skip


if __name__ == "__main__":
    main()
