#!/usr/bin/env python
"""Transcribe the assignment's test-clean/fbank folder (or any folder of audio files) into submission.csv.

    python examples/make_submission.py --model_dir model --input_dir data/test-clean/fbank --output submission.csv

The CSV has the columns `id,transcription`, one row per file in sorted file order, ids being the file stems.
"""

import argparse
import csv
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from speechseq import SpeechSeqForConditionalGeneration, SpeechSeqProcessor, load_audio
from speechseq.data.loaders import AUDIO_EXTENSIONS

logger = logging.getLogger("make_submission")


def transcribe_folder(model, processor, input_dir, batch_size: int = 16, **generate_kwargs) -> list[tuple[str, str]]:
    """`(id, transcription)` for every `.npy` filterbank or audio file in `input_dir`, in sorted order."""
    files = sorted(p for p in Path(input_dir).iterdir() if p.suffix == ".npy" or p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise ValueError(f"{input_dir} holds no .npy filterbanks or audio files")
    rows = []
    for start in tqdm(range(0, len(files), batch_size), desc="transcribing", unit="batch"):
        batch = files[start : start + batch_size]
        if batch[0].suffix == ".npy":
            inputs = processor(input_features=[np.load(p) for p in batch], return_tensors="pt")
        else:
            inputs = processor(audio=[load_audio(p) for p in batch], sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**inputs.to(model.device), **generate_kwargs)
        rows += zip((p.stem for p in batch), processor.batch_decode(ids, skip_special_tokens=True))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--input_dir", required=True, help="test-clean/fbank, or a folder of audio files")
    parser.add_argument("--output", default="submission.csv")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_beams", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SpeechSeqForConditionalGeneration.from_pretrained(args.model_dir).to(device).eval()
    processor = SpeechSeqProcessor.from_pretrained(args.model_dir)
    rows = transcribe_folder(model, processor, args.input_dir, args.batch_size, num_beams=args.num_beams)
    with open(args.output, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "transcription"])
        writer.writerows(rows)
    logger.info("wrote %d transcriptions to %s", len(rows), args.output)


if __name__ == "__main__":
    main()
