#!/usr/bin/env python
"""Tune the beam search's fusion weights on a dev split: a grid over ctc_weight x lm_weight x length_bonus, and
with a word n-gram LM over ngram_weight x word_bonus x unk_penalty too.

    python examples/tune_decoding.py --model_dir demo/model --corpus_dir demo/corpus --lm demo/lm \\
        --ctc_weights 0.2 0.3 0.5 --lm_weights 0 0.2 0.4 --length_bonuses 0 0.5 1 \\
        [--ngram_lm demo/ngram/lm.arpa --ngram_weights 0.5 1 --word_bonuses 0 1 2] [--decoding ctc]

Logs a table of CER / WER for every setting and the best one (lowest WER with an n-gram LM, else lowest CER; then
the other), and saves it into the model's `generation_config` (with `num_beams`, `length_penalty`, and the LMs it
uses, saved into the model's directory and named relative to it), so that `generate()`, the ASR pipeline and
`Seq2SeqTrainer` use it from then on, wherever the directory is copied. `--no_save` only reports.
"""

import argparse
import itertools
import logging
import shutil
from pathlib import Path

from transformers import AutoModelForCausalLM

from speechseq import SpeechSeqForConditionalGeneration, SpeechSeqProcessor
from speechseq.data import load_corpus
from speechseq.evaluation import error_rates, transcribe
from speechseq.ngram_lm import is_binary, write_binary

logger = logging.getLogger("tune_decoding")


NGRAM_FILE = "ngram_lm.bin"  # the n-gram LM's name inside a model directory: KenLM's binary, its vocabulary beside it
LM_DIR = "fusion_lm"  # the fusion LM's directory inside a model directory
SEARCH_OPTIONS = ("decoding", "num_beams", "ctc_weight", "lm_weight", "length_bonus", "length_penalty", "ngram_weight",
                  "word_bonus", "unk_penalty")  # fmt: skip


def tune(model, processor, dataset, num_beams, ctc_weights, lm_weights, length_bonuses, lm=None,
         length_penalty=0.0, batch_size=16, ngram_lm=None, ngram_weights=(0.0,), word_bonuses=(0.0,),
         unk_penalties=(-3.0,), decoding="attention") -> list[dict]:  # fmt: skip
    """Every setting of the grid with its CER and WER on `dataset`, best first (by WER when an n-gram LM is in the
    grid, its purpose; else by CER). LM weights other than 0 need `lm`, n-gram weights `ngram_lm`."""
    references = list(dataset["text"])
    results = []
    grid = itertools.product(ctc_weights, lm_weights, length_bonuses, ngram_weights, word_bonuses, unk_penalties)
    for ctc_weight, lm_weight, length_bonus, ngram_weight, word_bonus, unk_penalty in grid:
        if (lm_weight and lm is None) or ((ngram_weight or word_bonus) and ngram_lm is None):
            continue
        if decoding == "ctc" and (ctc_weight, lm_weight, length_bonus) != (ctc_weights[0], 0.0, length_bonuses[0]):
            continue  # the CTC prefix search has none of these
        if decoding == "ctc" and word_bonus and not ngram_weight:
            continue
        setting = {"decoding": decoding, "num_beams": num_beams, "ctc_weight": ctc_weight, "lm_weight": lm_weight,
                   "length_bonus": length_bonus, "length_penalty": length_penalty, "ngram_weight": ngram_weight,
                   "word_bonus": word_bonus, "unk_penalty": unk_penalty}  # fmt: skip
        hypotheses, seconds = transcribe(model, processor, dataset, batch_size, lm=lm, ngram_lm=ngram_lm,
                                         tokenizer=processor.tokenizer, **setting)  # fmt: skip
        results.append({**setting, **error_rates(references, hypotheses), "decode_s": seconds})
        logger.info("ctc %.2f  lm %.2f  bonus %.2f  ngram %.2f  word bonus %.2f  unk %.1f: CER %.2f%%  WER %.2f%%",
                    ctc_weight, lm_weight, length_bonus, ngram_weight, word_bonus, unk_penalty,
                    100 * results[-1]["cer"], 100 * results[-1]["wer"])  # fmt: skip
    by_words = ngram_lm is not None and any(ngram_weights)
    return sorted(results, key=lambda r: (r["wer"], r["cer"]) if by_words else (r["cer"], r["wer"]))


def save_setting(model_dir, setting: dict, lm=None, ngram_lm=None) -> None:
    """Write a setting's search options (those it has; scores and other keys are skipped) into the model's
    generation_config.json, with the language models it uses saved into the model's directory (the fusion LM as
    `fusion_lm/`, the n-gram LM as KenLM's binary `ngram_lm.bin` with `ngram_lm.bin.vocab`, smaller than ARPA and
    four times faster to load) and named relative to it: the setting survives moving, copying or uploading the
    directory."""
    model_dir = Path(model_dir)
    model = SpeechSeqForConditionalGeneration.from_pretrained(model_dir)
    config = model.generation_config
    for key in SEARCH_OPTIONS:
        if key in setting:
            setattr(config, key, setting[key])
    config.lm = None
    if lm and setting.get("lm_weight"):
        if Path(lm).resolve() != (model_dir / LM_DIR).resolve():
            AutoModelForCausalLM.from_pretrained(lm).save_pretrained(model_dir / LM_DIR)
        config.lm = LM_DIR
    config.ngram_lm = None
    if ngram_lm and (setting.get("ngram_weight") or setting.get("word_bonus")):
        target = model_dir / NGRAM_FILE
        if Path(ngram_lm).resolve() != target.resolve():
            if is_binary(ngram_lm):
                for suffix in ("", ".vocab"):
                    shutil.copyfile(f"{ngram_lm}{suffix}", f"{target}{suffix}")
            else:
                write_binary(ngram_lm, target)
        config.ngram_lm = NGRAM_FILE
    config.save_pretrained(model_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--corpus_dir", required=True)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--lm", help="the language model's directory (examples/run_lm.py)")
    parser.add_argument("--num_beams", type=int, default=10)
    parser.add_argument("--ctc_weights", type=float, nargs="+", default=[0.2, 0.3, 0.5])
    parser.add_argument("--lm_weights", type=float, nargs="+", default=[0.0, 0.2, 0.4])
    parser.add_argument("--length_bonuses", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--length_penalty", type=float, default=0.0, help="0: no length normalisation (ESPnet's)")
    parser.add_argument("--ngram_lm", help="a word n-gram LM, ARPA (examples/build_ngram_lm.py)")
    parser.add_argument("--ngram_weights", type=float, nargs="+", default=[0.0])
    parser.add_argument("--word_bonuses", type=float, nargs="+", default=[0.0])
    parser.add_argument("--unk_penalties", type=float, nargs="+", default=[-3.0])
    parser.add_argument("--decoding", choices=("attention", "ctc"), default="attention")
    parser.add_argument("--max_utterances", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--no_save", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    model = SpeechSeqForConditionalGeneration.from_pretrained(args.model_dir).eval()
    processor = SpeechSeqProcessor.from_pretrained(args.model_dir)
    dataset = load_corpus(args.corpus_dir)[args.split]
    dataset = dataset.select(range(min(args.max_utterances, len(dataset))))
    results = tune(model, processor, dataset, args.num_beams, args.ctc_weights, args.lm_weights, args.length_bonuses,
                   args.lm, args.length_penalty, args.batch_size, args.ngram_lm, args.ngram_weights, args.word_bonuses,
                   args.unk_penalties, args.decoding)  # fmt: skip
    columns = ("ctc_weight", "lm_weight", "length_bonus", "ngram_weight", "word_bonus", "unk_penalty")
    table = ["| " + " | ".join(columns) + " | CER | WER |", "|---" * (len(columns) + 2) + "|"]
    table += ["| " + " | ".join(str(r[c]) for c in columns) + f" | {r['cer']:.2%} | {r['wer']:.2%} |" for r in results]
    logger.info("%s utterances of %s, %d beams:\n%s", len(dataset), args.split, args.num_beams, "\n".join(table))
    best = results[0]
    logger.info("best: %s", ", ".join(f"{c}={best[c]}" for c in columns))
    if not args.no_save:
        save_setting(args.model_dir, best, args.lm, args.ngram_lm)
        logger.info("saved into %s/generation_config.json", args.model_dir)
    return results


if __name__ == "__main__":
    main()
