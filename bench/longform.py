"""Long recordings: `test_unseen` utterances joined with random pauses, decoded whole (long-form) against the same
utterances decoded one by one with the same settings.

    python bench/longform.py --model_dir demo/model --corpus_dir demo/corpus [--minutes 3] [--num_beams 1]
        [--decoding ctc | attention | saved]

Builds recordings of `--minutes` from consecutive `test_unseen` utterances with pauses of 0.2 to 1.5 s (seeded), and
reports WER / CER of the recordings' transcripts (long-form: cut at CTC pauses, segments decoded, joined) against
the references joined, and of the utterances decoded one by one, with their real-time factors. With
`--timestamps`, also the word times the long-form decoding gives (`return_token_spans`, as the pipeline's
`return_timestamps="word"`): each utterance's first word start and last word end against where its speech starts and
ends in the recording (the part's first and last 10 ms frame within 26 dB of its loudest, so that the TTS engines'
own leading and trailing silence does not count), words matched to the reference by jiwer's alignment (a misspelled
word still marks its place). With `--memory`, instead: peak resident memory and real-time factor of long-form
decoding of one 1-minute and one 10-minute recording, each in a process of its own (`longform_memory.json`).
Writes `bench/results/longform.json`.
"""

import argparse
import io
import logging
import time

import jiwer
import numpy as np
import soundfile

from speechseq import SpeechSeqForConditionalGeneration, SpeechSeqProcessor
from speechseq.data import load_corpus
from speechseq.evaluation import error_rates
from speechseq.generation_speechseq import SEGMENT_SECONDS, timestamp_chunks
from speechseq.ngram_lm import word_pieces

from common import in_fresh_process, peak_rss_mb, write_results

logger = logging.getLogger("bench.longform")


def recordings(split, minutes: float, seed: int = 0):
    """(audio, reference, [utterance audio], [utterance text], [(speech start, end) seconds]) recordings of about
    `minutes` each, until the split runs out."""
    rng = np.random.default_rng(seed)
    current, texts, parts, spans = [], [], [], []
    for row in split:
        audio, rate = soundfile.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
        if rate != 16000:
            raise ValueError(f"{row.get('id', 'a row')} of the corpus is at {rate} Hz, not 16000")
        pause = rng.standard_normal(int(rng.uniform(0.2, 1.5) * 16000)).astype(np.float32) * 1e-3  # a quiet room, not digital silence
        at = sum(map(len, current)) / 16000
        spans.append(tuple(at + t for t in speech_bounds(audio)))
        current += [audio, pause]
        texts.append(row["text"])
        parts.append(audio)
        if sum(map(len, current)) >= minutes * 60 * 16000:
            yield np.concatenate(current), " ".join(texts), parts, texts, spans
            current, texts, parts, spans = [], [], [], []


def speech_bounds(audio: np.ndarray) -> tuple[float, float]:
    """(start, end) seconds of the speech in an utterance: its first and last 10 ms frame within 26 dB of the
    loudest."""
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) >= 0.05 * np.sqrt((frames**2).mean(axis=1)).max())
    return loud[0] * 0.01, (loud[-1] + 1) * 0.01


def timestamp_errors(reference: str, words: list[dict], texts: list[str], spans: list) -> tuple[list, list]:
    """Per utterance whose first (last) reference word is aligned to a transcript word: |its start - the speech's
    start| and |its end - the speech's end|, seconds; then the same for the words spelled right alone (the times'
    own error, apart from what recognition errors shift)."""
    hypothesis = " ".join(word["text"] for word in words)
    matched, right = {}, set()
    for chunk in jiwer.process_words(reference, hypothesis).alignments[0]:
        if chunk.type in ("equal", "substitute"):
            for i in range(chunk.ref_end_idx - chunk.ref_start_idx):
                matched[chunk.ref_start_idx + i] = chunk.hyp_start_idx + i
                if chunk.type == "equal":
                    right.add(chunk.ref_start_idx + i)
    errors, exact, first = [], [], 0
    for text, (start, end) in zip(texts, spans):
        last = first + len(text.split()) - 1
        for index, side, truth in ((first, 0, start), (last, 1, end)):
            if index in matched:
                errors.append(abs(words[matched[index]]["timestamp"][side] - truth))
                if index in right:
                    exact.append(errors[-1])
        first = last + 1
    return errors, exact


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--corpus_dir", required=True)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--recordings", type=int, default=1)
    parser.add_argument("--num_beams", type=int, default=1)
    parser.add_argument("--segment_seconds", type=float, default=SEGMENT_SECONDS)
    parser.add_argument("--split", default="test_unseen", help="dev to tune long-form settings on")
    parser.add_argument("--decoding", default="ctc", choices=("ctc", "attention", "saved"),
                        help="greedy or beam search by the CTC head or the decoder, or the model's saved decoding "
                        "(its generation config, LMs and all: what the pipeline gives; --num_beams is ignored)")
    parser.add_argument("--timestamps", action="store_true", help="also measure the word times")
    parser.add_argument("--memory", action="store_true", help="peak memory of 1 and 10 minutes instead")
    parser.add_argument("--output", help="default: bench/results/longform.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # the search asked for, nothing more: without ngram_weight=0 a model whose generation config holds an n-gram LM
    # (the demo's) would run the CTC prefix search with it where greedy CTC was asked for (and its word bonus, which
    # counts the n-gram's words, goes with it)
    options = {"decoding": args.decoding, "num_beams": args.num_beams, "ngram_weight": 0.0, "word_bonus": 0.0}
    if args.decoding == "saved":  # the generation config as it is
        options = {}
    if args.decoding == "attention" and args.num_beams > 1:
        options.update(ctc_weight=0.3, length_bonus=1.0, length_penalty=0.0)
    if args.memory:
        runs = [{"minutes": minutes, **in_fresh_process(decode_one, args.model_dir, args.corpus_dir, args.split,
                                                         minutes, options, args.segment_seconds)}
                for minutes in (1.0, 10.0)]  # fmt: skip
        for run in runs:
            logger.info("%.1f min: peak RSS %.0f MB (%.0f MB before decoding), RTF %.3f", run["recording_s"] / 60,
                        run["peak_rss_mb"], run["loaded_rss_mb"], run["rtf"])  # fmt: skip
        logger.info("10 min / 1 min peak memory over the loaded model: %.2f (target <= 1.5)",
                    (runs[1]["peak_rss_mb"] - runs[1]["loaded_rss_mb"]) / max(1.0, runs[0]["peak_rss_mb"] - runs[0]["loaded_rss_mb"]))  # fmt: skip
        write_results("longform_memory", runs, args.output)
        return
    model = SpeechSeqForConditionalGeneration.from_pretrained(args.model_dir).eval()
    processor = SpeechSeqProcessor.from_pretrained(args.model_dir)
    split = load_corpus(args.corpus_dir)[args.split]
    # one utterance decoded before the clocks start: the first generate() loads the n-gram LM and the tokenizer and
    # warms torch's kernels, which would otherwise be charged to the first recording's long-form time alone
    warm_up = soundfile.read(io.BytesIO(split[0]["audio"]["bytes"]), dtype="float32")[0]
    model.generate(**processor(audio=[warm_up], sampling_rate=16000, return_tensors="pt"), **options)
    records = []
    for k, (audio, reference, parts, texts, spans) in enumerate(recordings(split, args.minutes)):
        if k == args.recordings:
            break
        features = processor(audio=[audio], sampling_rate=16000, return_tensors="pt")
        began = time.perf_counter()
        long_form = {"segment_seconds": args.segment_seconds,
                     "segment_normalization": processor.feature_extractor.normalization}  # as the pipeline passes it
        output = model.generate(**features, **options, **long_form, return_token_spans=args.timestamps)
        whole_s = time.perf_counter() - began
        whole = processor.batch_decode(output.sequences if args.timestamps else output, skip_special_tokens=True)[0]
        timing = {}
        if args.timestamps:
            words = timestamp_chunks(output.token_spans[0], word_pieces(processor.tokenizer), model.frame_seconds)
            errors, exact = timestamp_errors(reference, words, texts, spans)
            timing = {"timestamp_median_error_s": float(np.median(errors)),
                      "timestamp_p95_error_s": float(np.percentile(errors, 95)),
                      "timestamp_boundaries": len(errors), "boundaries": 2 * len(texts),
                      "timestamp_right_words_median_error_s": float(np.median(exact)) if exact else None,
                      "timestamp_right_words_p95_error_s": float(np.percentile(exact, 95)) if exact else None,
                      "timestamp_right_words": len(exact)}  # fmt: skip
            logger.info("word times: first-word start / last-word end error median %.3f s, 95th percentile %.3f s "
                        "(%d of %d boundaries matched); words spelled right (%d): %.3f s, %.3f s",
                        timing["timestamp_median_error_s"], timing["timestamp_p95_error_s"], len(errors),
                        2 * len(texts), len(exact), np.median(exact) if exact else float("nan"),
                        np.percentile(exact, 95) if exact else float("nan"))  # fmt: skip
        one_by_one, parts_s = [], 0.0
        for i in range(0, len(parts), 16):
            batch = processor(audio=parts[i : i + 16], sampling_rate=16000, return_tensors="pt")
            began = time.perf_counter()
            one_by_one += processor.batch_decode(model.generate(**batch, **options), skip_special_tokens=True)
            parts_s += time.perf_counter() - began
        seconds = len(audio) / 16000
        long_rates = error_rates([reference], [whole])
        part_rates = error_rates([reference], [" ".join(one_by_one)])
        records.append({"split": args.split, "recording_s": seconds, "utterances": len(parts), "options": options,
                        **long_form,
                        "longform_wer": long_rates["wer"], "longform_cer": long_rates["cer"],
                        "one_by_one_wer": part_rates["wer"], "one_by_one_cer": part_rates["cer"],
                        "longform_rtf": whole_s / seconds, "one_by_one_rtf": parts_s / seconds,
                        "words": len(whole.split()), "reference_words": len(reference.split()), **timing})  # fmt: skip
        logger.info("%.0f s, %d utterances: long-form WER %.1f%% (%d words for %d), one by one %.1f%%; RTF %.3f vs %.3f",
                    seconds, len(parts), 100 * long_rates["wer"], len(whole.split()), len(reference.split()),
                    100 * part_rates["wer"], whole_s / seconds, parts_s / seconds)  # fmt: skip
    write_results("longform", records, args.output)


def decode_one(model_dir, corpus_dir, split, minutes, options, segment_seconds) -> dict:
    """The first recording of `minutes` of the split, decoded long-form in this (fresh) process."""
    model = SpeechSeqForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = SpeechSeqProcessor.from_pretrained(model_dir)
    audio = next(recordings(load_corpus(corpus_dir)[split], minutes))[0]
    features = processor(audio=[audio], sampling_rate=16000, return_tensors="pt")
    loaded = peak_rss_mb()
    began = time.perf_counter()
    model.generate(**features, **options, segment_seconds=segment_seconds,
                   segment_normalization=processor.feature_extractor.normalization)  # fmt: skip
    seconds = time.perf_counter() - began
    return {"recording_s": len(audio) / 16000, "rtf": seconds / (len(audio) / 16000), "loaded_rss_mb": loaded,
            "peak_rss_mb": peak_rss_mb()}  # fmt: skip


if __name__ == "__main__":
    main()
