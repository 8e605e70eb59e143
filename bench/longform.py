"""Long recordings: `test_unseen` utterances joined with random pauses, decoded whole (long-form) against the same
utterances decoded one by one with the same settings.

    python bench/longform.py --model_dir demo/model --corpus_dir demo/corpus [--minutes 3] [--num_beams 1]

Builds recordings of `--minutes` from consecutive `test_unseen` utterances with pauses of 0.2 to 1.5 s (seeded), and
reports WER / CER of the recordings' transcripts (long-form: cut at CTC pauses, segments decoded, joined) against
the references joined, and of the utterances decoded one by one, with their real-time factors. Writes
`bench/results/longform.json`.
"""

import argparse
import io
import logging
import time

import numpy as np
import soundfile

from speechseq import SpeechSeqForConditionalGeneration, SpeechSeqProcessor
from speechseq.data import load_corpus
from speechseq.evaluation import error_rates

from common import write_results

logger = logging.getLogger("bench.longform")


def recordings(split, minutes: float, seed: int = 0):
    """(audio, reference, [utterance audio], [utterance text]) recordings of about `minutes` each, until the split
    runs out."""
    rng = np.random.default_rng(seed)
    current, texts, parts = [], [], []
    for row in split:
        audio, rate = soundfile.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
        if rate != 16000:
            raise ValueError(f"{row.get('id', 'a row')} of the corpus is at {rate} Hz, not 16000")
        pause = rng.standard_normal(int(rng.uniform(0.2, 1.5) * 16000)).astype(np.float32) * 1e-3  # a quiet room, not digital silence
        current += [audio, pause]
        texts.append(row["text"])
        parts.append(audio)
        if sum(map(len, current)) >= minutes * 60 * 16000:
            yield np.concatenate(current), " ".join(texts), parts, texts
            current, texts, parts = [], [], []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--corpus_dir", required=True)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--recordings", type=int, default=1)
    parser.add_argument("--num_beams", type=int, default=1)
    parser.add_argument("--segment_seconds", type=float, default=20.0)
    parser.add_argument("--split", default="test_unseen", help="dev to tune long-form settings on")
    parser.add_argument("--decoding", default="ctc", choices=("ctc", "attention"))
    parser.add_argument("--output", help="default: bench/results/longform.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = SpeechSeqForConditionalGeneration.from_pretrained(args.model_dir).eval()
    processor = SpeechSeqProcessor.from_pretrained(args.model_dir)
    options = {"decoding": args.decoding, "num_beams": args.num_beams}
    if args.decoding == "attention" and args.num_beams > 1:
        options.update(ctc_weight=0.3, length_bonus=1.0, length_penalty=0.0)
    split = load_corpus(args.corpus_dir)[args.split]
    records = []
    for k, (audio, reference, parts, texts) in enumerate(recordings(split, args.minutes)):
        if k == args.recordings:
            break
        features = processor(audio=[audio], sampling_rate=16000, return_tensors="pt")
        began = time.perf_counter()
        long_form = {"segment_seconds": args.segment_seconds,
                     "segment_normalization": processor.feature_extractor.normalization}  # as the pipeline passes it
        whole = processor.batch_decode(model.generate(**features, **options, **long_form), skip_special_tokens=True)[0]
        whole_s = time.perf_counter() - began
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
                        "words": len(whole.split()), "reference_words": len(reference.split())})  # fmt: skip
        logger.info("%.0f s, %d utterances: long-form WER %.1f%% (%d words for %d), one by one %.1f%%; RTF %.3f vs %.3f",
                    seconds, len(parts), 100 * long_rates["wer"], len(whole.split()), len(reference.split()),
                    100 * part_rates["wer"], whole_s / seconds, parts_s / seconds)  # fmt: skip
    write_results("longform", records, args.output)


if __name__ == "__main__":
    main()
