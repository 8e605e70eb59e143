"""Decoding speed and accuracy: greedy, speechseq's beam search with and without CTC and LM fusion, and
transformers' built-in beam search on the same model, in one run.

    python bench/decoding.py --model_dir demo/model --corpus_dir demo/corpus --lm demo/lm [--split test_unseen]

Methods (`bench/results/decoding.json`, a list of {"method", "rtf", "cer", "wer", ...}):
  greedy         generate() with one beam: transformers' greedy search
  beam10         speechseq's beam search, the decoder alone
  beam10_ctc     + CTC prefix scores
  beam10_ctc_lm  + CTC prefix scores + the language model
  beam10_ctc_ngram  + CTC prefix scores + the word n-gram LM (with --ngram_lm)
  ctc_beam10     the CTC prefix beam search, the CTC head alone (with --ngram_lm, as the baseline of the next)
  ctc_beam10_ngram  the CTC prefix beam search with the word n-gram LM (pyctcdecode's search)
  hf_beam10      transformers' GenerationMixin.generate(num_beams=10) on the same model
With `--ctc_memory` it measures instead the CTC prefix scorer's memory where it is largest: beam 10 + CTC (weight 0.3,
and 1.0, where no other scorer pre-selects tokens and CTC scores the whole vocabulary) on one `--seconds` utterance
(30) with a `--vocab_size` (10000: BPE 10k) `small` model of random weights, `--steps` tokens (20), each setting in a
process of its own (`bench/results/ctc_memory.json`).

Each method runs in a Python process of its own, which loads the model, the language model and the split and then
decodes: `peak_rss_mb` is that process's peak resident memory, `loaded_rss_mb` its peak before decoding began (the
difference is the search's own memory). The real-time factor is decoding seconds (encoder included, features not)
over seconds of audio. Every method stops at one token per encoder frame plus the end token (per utterance in
speechseq's searches, per batch in transformers'); beam10 and hf_beam10 use transformers' default length normalisation (length_penalty=1). The fused
searches use the weights in the model's generation_config when examples/tune_decoding.py saved them, else
--ctc_weight / --lm_weight / --length_bonus / --length_penalty (no normalisation by default, as ESPnet).
"""

import argparse
import functools
import logging

from speechseq import SpeechSeqForCausalLM, SpeechSeqForConditionalGeneration, SpeechSeqProcessor
from speechseq.data import load_corpus
from speechseq.evaluation import error_rates, transcribe
from speechseq.ngram_lm import WordLanguageModel

from common import builtin_generate, decoding_option, in_fresh_process, peak_rss_mb, write_results

logger = logging.getLogger("bench.decoding")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir")
    parser.add_argument("--corpus_dir")
    parser.add_argument("--ctc_memory", action="store_true", help="measure the CTC prefix scorer's memory instead")
    parser.add_argument("--vocab_size", type=int, default=10000, help="with --ctc_memory")
    parser.add_argument("--seconds", type=float, default=30.0, help="with --ctc_memory")
    parser.add_argument("--steps", type=int, default=20, help="with --ctc_memory")
    parser.add_argument("--lm", help="a language model directory (examples/run_lm.py); without it, no LM row")
    parser.add_argument("--ngram_lm", help="a word n-gram LM (examples/build_ngram_lm.py); without it, no n-gram rows")
    parser.add_argument("--ngram_weight", type=float, default=None)
    parser.add_argument("--word_bonus", type=float, default=None)
    parser.add_argument("--split", default="test_unseen")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_beams", type=int, default=10)
    parser.add_argument("--ctc_weight", type=float, default=None)
    parser.add_argument("--lm_weight", type=float, default=None)
    parser.add_argument("--length_bonus", type=float, default=None)
    parser.add_argument("--length_penalty", type=float, default=None, help="of the fused searches (default: 0)")
    parser.add_argument("--max_utterances", type=int, default=None)
    parser.add_argument("--output", help="default: bench/results/decoding.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.ctc_memory:
        return ctc_memory(args)
    if not (args.model_dir and args.corpus_dir):
        parser.error("--model_dir and --corpus_dir are needed (unless --ctc_memory)")

    model, _, dataset = load(args)
    references = list(dataset["text"])
    audio_seconds = sum(dataset["duration"])

    def weight(name, default):
        return decoding_option(model, name, getattr(args, name), default)

    ctc = {"ctc_weight": weight("ctc_weight", 0.3)}
    lm = {"lm": args.lm, "lm_weight": weight("lm_weight", 0.3)}
    fused = {"num_beams": args.num_beams, "length_bonus": weight("length_bonus", 0.0),
             "length_penalty": weight("length_penalty", 0.0)}  # fmt: skip
    no_ngram = {"ngram_weight": 0.0}  # a model that saved an n-gram LM in its generation_config would use it
    methods = {
        "greedy": dict(num_beams=1, ctc_weight=0.0, lm_weight=0.0, length_bonus=0.0, **no_ngram),
        f"beam{args.num_beams}": dict(num_beams=args.num_beams, length_penalty=1.0, length_bonus=0.0, ctc_weight=0.0,
                                      lm_weight=0.0, **no_ngram),  # fmt: skip
        f"beam{args.num_beams}_ctc": dict(fused, **ctc, lm_weight=0.0, **no_ngram),
    }
    if args.lm:
        methods[f"beam{args.num_beams}_ctc_lm"] = dict(fused, **ctc, **lm, **no_ngram)
    if args.ngram_lm:
        ngram = {"ngram_lm": args.ngram_lm, "ngram_weight": weight("ngram_weight", 0.6),
                 "word_bonus": weight("word_bonus", 0.0)}  # fmt: skip
        methods[f"beam{args.num_beams}_ctc_ngram"] = dict(fused, **ctc, lm_weight=0.0, **ngram)
        methods[f"ctc_beam{args.num_beams}"] = dict(decoding="ctc", num_beams=args.num_beams, **no_ngram)
        methods[f"ctc_beam{args.num_beams}_ngram"] = dict(decoding="ctc", num_beams=args.num_beams, **ngram)
    methods[f"hf_beam{args.num_beams}"] = dict(num_beams=args.num_beams, length_penalty=1.0)

    records = []
    for method, options in methods.items():
        run = in_fresh_process(decode, args, method, options)
        rates = error_rates(references, run.pop("hypotheses"))
        record = {"method": method, "rtf": run["decode_s"] / audio_seconds, **rates, **run,
                  "options": {k: v for k, v in options.items() if k not in ("lm", "ngram_lm")}}  # fmt: skip
        logger.info("%-16s rtf %.4f  cer %.2f%%  wer %.2f%%  peak RSS %.0f MB (%.0f MB before decoding)", method,
                    record["rtf"], 100 * rates["cer"], 100 * rates["wer"], run["peak_rss_mb"], run["loaded_rss_mb"])
        records.append(record)

    for record in records:
        record.update(split=args.split, utterances=len(dataset), audio_s=audio_seconds, batch_size=args.batch_size)
    write_results("decoding", records, args.output)
    greedy, ours, theirs = records[0], records[1], records[-1]
    logger.info("beam%d / transformers' beam%d time: %.2f (target <= 0.8)", args.num_beams, args.num_beams,
                ours["decode_s"] / theirs["decode_s"])  # fmt: skip
    by_method = {record["method"]: record for record in records}
    if args.ngram_lm:
        for base in (f"beam{args.num_beams}_ctc", f"ctc_beam{args.num_beams}"):
            plain, with_ngram = by_method[base], by_method[f"{base}_ngram"]
            logger.info("%s: n-gram / without time %.2f (target <= 2); WER %.1f%% -> %.1f%% (%.0f%% relative)", base,
                        with_ngram["decode_s"] / plain["decode_s"], 100 * plain["wer"], 100 * with_ngram["wer"],
                        100 * (1 - with_ngram["wer"] / plain["wer"]))  # fmt: skip
    if args.lm:
        fused = by_method[f"beam{args.num_beams}_ctc_lm"]
        logger.info("beam+ctc+lm / greedy time: %.2f (target <= 3); WER %.1f%% -> %.1f%% (%.0f%% relative, target "
                    ">= 15%%)", fused["decode_s"] / greedy["decode_s"], 100 * greedy["wer"], 100 * fused["wer"],
                    100 * (1 - fused["wer"] / greedy["wer"]))  # fmt: skip


def ctc_memory(args) -> None:
    """Peak memory and time of beam 10 + CTC on one long utterance with a large vocabulary (see the module's doc)."""
    records = []
    for ctc_weight in (0.3, 1.0):
        run = in_fresh_process(ctc_memory_run, args.vocab_size, args.seconds, args.steps, ctc_weight)
        records.append({"ctc_weight": ctc_weight, "vocab_size": args.vocab_size, "seconds": args.seconds,
                        "steps": args.steps, "num_beams": 10, **run})  # fmt: skip
        logger.info("beam 10 + CTC %.1f, vocabulary %d, %.0f s: %.1f s for %d tokens, peak RSS %.0f MB (%.0f MB "
                    "before decoding)", ctc_weight, args.vocab_size, args.seconds, run["decode_s"], args.steps,
                    run["peak_rss_mb"], run["loaded_rss_mb"])  # fmt: skip
    write_results("ctc_memory", records, args.output)


def ctc_memory_run(vocab_size: int, seconds: float, steps: int, ctc_weight: float) -> dict:
    import time

    import torch

    from speechseq import SpeechSeqConfig

    torch.manual_seed(0)
    model = SpeechSeqForConditionalGeneration(SpeechSeqConfig.from_preset("small", vocab_size=vocab_size)).eval()
    features = torch.randn(1, int(seconds * 100), 80)
    loaded = peak_rss_mb()
    began = time.perf_counter()
    model.generate(features, num_beams=10, ctc_weight=ctc_weight, max_new_tokens=steps, min_new_tokens=steps - 1)
    return {"decode_s": time.perf_counter() - began, "loaded_rss_mb": loaded, "peak_rss_mb": peak_rss_mb()}


def load(args):
    """The model, its processor and the split to decode."""
    model = SpeechSeqForConditionalGeneration.from_pretrained(args.model_dir).eval()
    processor = SpeechSeqProcessor.from_pretrained(args.model_dir)
    dataset = load_corpus(args.corpus_dir)[args.split]
    if args.max_utterances:
        dataset = dataset.select(range(min(args.max_utterances, len(dataset))))
    return model, processor, dataset


def decode(args, method: str, options: dict) -> dict:
    """Load and decode with one method (in a fresh process: see `in_fresh_process`): the transcripts, the decoding
    seconds, and the process's peak resident memory before and after decoding."""
    model, processor, dataset = load(args)
    if options.get("lm"):  # loaded before the memory baseline, like the model
        options = {**options, "lm": SpeechSeqForCausalLM.from_pretrained(options["lm"]).eval()}
    if options.get("ngram_lm"):
        options = {**options, "ngram_lm": WordLanguageModel(options["ngram_lm"])}
    loaded = peak_rss_mb()
    generate = functools.partial(builtin_generate, model) if method.startswith("hf_") else None
    hypotheses, seconds = transcribe(model, processor, dataset, args.batch_size, generate=generate, **options)
    return {"hypotheses": hypotheses, "decode_s": seconds, "loaded_rss_mb": loaded, "peak_rss_mb": peak_rss_mb()}


if __name__ == "__main__":
    main()
