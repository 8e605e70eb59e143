"""What a word n-gram LM buys outside its own text: King James verses (a source the LM was never built from),
spoken by the corpus builder's voices, decoded with and without the n-gram LM.

    python bench/out_of_domain.py --model_dir demo/model --ngram_lm demo/ngram/lm.arpa [--utterances 100]

Builds (once) `bench/work/kjv` with the corpus builder (`sentences=` the KJV's verses, apt-get install bible-kjv),
then decodes its `test_unseen` split (voices the demo's model never heard) with the model's beam search and joint
CTC weights, without and with the n-gram LM (the weights of `examples/demo.py`), and the CTC prefix search likewise.
Writes `bench/results/ngram_out_of_domain.json`.
"""

import argparse
import logging
import sys
from pathlib import Path

from speechseq import SpeechSeqForConditionalGeneration, SpeechSeqProcessor
from speechseq.data import build_corpus
from speechseq.data.text_sources import bible_verses, ensure_debian_packages
from speechseq.evaluation import error_rates, transcribe

from common import write_results

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
from demo import BEAM, CTC_NGRAM, NGRAM  # noqa: E402

logger = logging.getLogger("bench.out_of_domain")
NUMBERS = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}


def kjv_sentences() -> list[str]:
    """Verses, without the chapter-and-verse references some lines begin with ("ge one one in the beginning")."""
    return [s for s in bible_verses() if not (len(s.split()) > 3 and s.split()[1] in NUMBERS)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--ngram_lm", required=True)
    parser.add_argument("--corpus_dir", default="bench/work/kjv")
    parser.add_argument("--utterances", type=int, default=100)
    parser.add_argument("--ctc_weight", type=float, default=BEAM["ctc_weight"])
    parser.add_argument("--output", help="default: bench/results/ngram_out_of_domain.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ensure_debian_packages({"bible-kjv": "bible"})
    corpus = build_corpus(args.corpus_dir, hours=0.02, eval_utterances=args.utterances, seed=0,
                          sentences=kjv_sentences())  # fmt: skip
    dataset = corpus["test_unseen"]
    model = SpeechSeqForConditionalGeneration.from_pretrained(args.model_dir).eval()
    processor = SpeechSeqProcessor.from_pretrained(args.model_dir)
    beam = {**BEAM, "ctc_weight": args.ctc_weight}
    decodings = {
        "greedy CTC": {"decoding": "ctc"},
        "beam 10 + CTC": beam,
        "beam 10 + CTC + n-gram": {**beam, **NGRAM, "ngram_lm": args.ngram_lm},
        "CTC beam 10": {"decoding": "ctc", "num_beams": 10},
        "CTC beam 10 + n-gram": {**CTC_NGRAM, "ngram_lm": args.ngram_lm},
    }
    records = []
    for name, options in decodings.items():
        hypotheses, seconds = transcribe(model, processor, dataset, progress=name, **options)
        rates = error_rates(dataset["text"], hypotheses)
        records.append({"decoding": name, **rates, "decode_s": seconds, "utterances": len(dataset),
                        "model_dir": args.model_dir, "example": [dataset["text"][0], hypotheses[0]]})  # fmt: skip
        logger.info("%-24s CER %.1f%%  WER %.1f%%", name, 100 * rates["cer"], 100 * rates["wer"])
    write_results("ngram_out_of_domain", records, args.output)


if __name__ == "__main__":
    main()
