"""What a word n-gram LM buys: a split decoded the demo's ways with and without it, in its own domain or outside it.

    python bench/ngram_decodings.py --model_dir demo/model --ngram_lm demo/ngram/lm.arpa --kjv [--utterances 100]
    python bench/ngram_decodings.py --model_dir bench/work/demo-whisper/model --ngram_lm demo/ngram/lm.arpa \
        --corpus_dir demo/corpus --ctc_weight 0.6 --output bench/results/whisper_demo_ngram.json

With `--kjv`, the text is from a source the LM was never built from: King James verses, spoken by the corpus
builder's voices (`bench/work/kjv`, built once with `sentences=` the KJV's verses; apt-get install bible-kjv).
Decodes the `test_unseen` split (voices no training utterance uses) with greedy CTC, the beam search with joint CTC,
without and with the n-gram LM (the weights of `examples/demo.py`), and the CTC prefix search likewise. Writes
`bench/results/ngram_out_of_domain.json` (`--kjv`) or `bench/results/ngram_decodings.json`.
"""

import argparse
import logging
import sys
from pathlib import Path

from speechseq import SpeechSeqForConditionalGeneration, SpeechSeqProcessor
from speechseq.data import build_corpus, load_corpus
from speechseq.data.text_sources import bible_verses, ensure_debian_packages
from speechseq.evaluation import error_rates, transcribe

from common import write_results

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
from demo import BEAM, CTC_NGRAM, NGRAM, SAVED_DECODING  # noqa: E402

logger = logging.getLogger("bench.ngram_decodings")
NUMBERS = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}


def kjv_sentences() -> list[str]:
    """Verses, without the chapter-and-verse references some lines begin with ("ge one one in the beginning")."""
    return [s for s in bible_verses() if not (len(s.split()) > 3 and s.split()[1] in NUMBERS)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--ngram_lm", required=True)
    parser.add_argument("--corpus_dir", help="the corpus to decode (default with --kjv: bench/work/kjv)")
    parser.add_argument("--kjv", action="store_true", help="build and decode the King James corpus")
    parser.add_argument("--split", default="test_unseen")
    parser.add_argument("--utterances", type=int, default=100, help="per split of the King James corpus")
    parser.add_argument("--ctc_weight", type=float, default=BEAM["ctc_weight"])
    parser.add_argument("--output", help="default: bench/results/ngram_out_of_domain.json or ngram_decodings.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.kjv:
        ensure_debian_packages({"bible-kjv": "bible"})
        corpus = build_corpus(args.corpus_dir or "bench/work/kjv", hours=0.02, eval_utterances=args.utterances,
                              seed=0, sentences=kjv_sentences())  # fmt: skip
    elif args.corpus_dir:
        corpus = load_corpus(args.corpus_dir)
    else:
        parser.error("give --corpus_dir, or --kjv")
    dataset = corpus[args.split]
    model = SpeechSeqForConditionalGeneration.from_pretrained(args.model_dir).eval()
    processor = SpeechSeqProcessor.from_pretrained(args.model_dir)
    beam = {**BEAM, "ctc_weight": args.ctc_weight, "ngram_weight": 0.0}  # not the n-gram a model may have saved
    decodings = {
        "greedy CTC": {"decoding": "ctc", "num_beams": 1, "ngram_weight": 0.0},
        "beam 10 + CTC": beam,
        SAVED_DECODING: {**beam, **NGRAM, "ngram_lm": args.ngram_lm},  # the demo's: a beam of 30
        "CTC beam 10": {"decoding": "ctc", "num_beams": 10, "ngram_weight": 0.0},
        "CTC beam 10 + n-gram": {**CTC_NGRAM, "ngram_lm": args.ngram_lm},
    }
    records = []
    for name, options in decodings.items():
        hypotheses, seconds = transcribe(model, processor, dataset, progress=name, **options)
        rates = error_rates(dataset["text"], hypotheses)
        records.append({"decoding": name, **rates, "decode_s": seconds, "utterances": len(dataset), "split": args.split,
                        "model_dir": args.model_dir, "example": [dataset["text"][0], hypotheses[0]]})  # fmt: skip
        logger.info("%-24s CER %.1f%%  WER %.1f%%", name, 100 * rates["cer"], 100 * rates["wer"])
    write_results("ngram_out_of_domain" if args.kjv else "ngram_decodings", records, args.output)


if __name__ == "__main__":
    main()
