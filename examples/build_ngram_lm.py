#!/usr/bin/env python
"""Build a word n-gram language model (modified Kneser-Ney, KenLM's lmplz) from the project's text sources.

    python examples/build_ngram_lm.py --corpus_dir demo/corpus --output demo/ngram/lm.arpa [--order 4] [--bible]

The text is Debian's fortunes and WordNet's examples, the definitions and quotations of its GCIDE dictionary (3
million words of general English; `--no_dictionary` leaves them out), and the KJV with `--bible` (or `--text_files`
instead), passed through `normalize_text` as the transcripts are; 4-grams seen once are pruned (`--prune`). The
corpus's dev and test sentences are held out, and the LM's word perplexity and out-of-vocabulary rate on them are
reported (and written to `<output>.json`). Decode with it:
`model.generate(..., ngram_lm="demo/ngram/lm.arpa", ngram_weight=0.5)`; `examples/tune_decoding.py --ngram_lm` tunes
its weights on dev and stores it in the model's directory.
"""

import argparse
import json
import logging
import time
from pathlib import Path

from speechseq import normalize_text
from speechseq.data import load_corpus
from speechseq.data.text_sources import GCIDE_FILE, ensure_debian_packages, lm_sentences
from speechseq.ngram_lm import WordLanguageModel, train_ngram_lm

logger = logging.getLogger("build_ngram_lm")

HELD_OUT_SPLITS = ("dev", "test_seen", "test_unseen")


def held_out_sentences(corpus_dir) -> list[str]:
    """The corpus's dev and test transcripts: never in an LM's text."""
    corpus = load_corpus(corpus_dir)
    return list(dict.fromkeys(t for split in HELD_OUT_SPLITS if split in corpus for t in corpus[split]["text"]))


def build(output, corpus_dir=None, order: int = 4, bible: bool = False, text_files=(), prune=None,
          dictionary: bool = True) -> dict:  # fmt: skip
    """Build the LM into `output` (ARPA) and return its figures (sentences, words, seconds, held-out perplexity).
    `prune`: lmplz's count thresholds per order; by default the n-grams of the highest order seen once are dropped
    (with GCIDE's text, half the file, 111 MB, and no worse on `dev`: README, "General English in the LM");
    `()` keeps every n-gram."""
    start = time.time()
    if prune is None:
        prune = (0,) * (order - 1) + (1,) if order > 1 else ()
    if text_files:
        sentences = [normalize_text(line) for path in text_files for line in Path(path).read_text(encoding="utf-8").splitlines()]
    else:
        if dictionary:
            ensure_debian_packages({"dict-gcide": str(GCIDE_FILE)})
        sentences = lm_sentences(bible, dictionary)
    held_out = held_out_sentences(corpus_dir) if corpus_dir else []
    excluded = set(held_out)
    text = [s for s in dict.fromkeys(sentences) if s and s not in excluded]
    path = train_ngram_lm(text, output, order=order, prune=prune)
    results = {"order": order, "sentences": len(text), "words": sum(len(s.split()) for s in text),
               "build_s": time.time() - start, "arpa_mb": path.stat().st_size / 1e6}  # fmt: skip
    if held_out:
        lm = WordLanguageModel(path)
        words = [w for s in held_out for w in s.split()]
        log10 = sum(lm.model.score(s) for s in held_out)  # with </s>, as perplexity is usually counted
        results.update(held_out_sentences=len(held_out),
                       held_out_perplexity=10 ** (-log10 / (len(words) + len(held_out))),
                       held_out_oov_rate=sum(w not in lm.words for w in words) / len(words))  # fmt: skip
    Path(f"{path}.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="the ARPA file to write")
    parser.add_argument("--corpus_dir", help="an ASR corpus whose dev and test sentences are held out")
    parser.add_argument("--order", type=int, default=4)
    parser.add_argument("--bible", action="store_true", help="add the King James Bible to the text")
    parser.add_argument("--text_files", nargs="+", default=(), help="text files to build from instead, a sentence a line")
    parser.add_argument("--no_dictionary", action="store_true", help="leave GCIDE's definitions out of the text")
    parser.add_argument("--prune", type=int, nargs="*", default=None,
                        help="lmplz --prune count thresholds per order (default: 1 for the highest order, 0 for the "
                             "others; --prune alone: none)")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = build(args.output, args.corpus_dir, args.order, args.bible, args.text_files,
                    None if args.prune is None else tuple(args.prune), dictionary=not args.no_dictionary)  # fmt: skip
    summary = f"{args.order}-gram LM of {results['sentences']} sentences ({results['words']} words) in {results['build_s']:.1f} s"
    if "held_out_perplexity" in results:
        summary += (f"; on {results['held_out_sentences']} held-out sentences: perplexity "
                    f"{results['held_out_perplexity']:.0f}, {results['held_out_oov_rate']:.1%} of words unknown")  # fmt: skip
    logger.info("%s -> %s", summary, args.output)
    return results


if __name__ == "__main__":
    main()
