#!/usr/bin/env python
"""Tune the beam search's fusion weights on a dev split: a grid over ctc_weight x lm_weight x length_bonus.

    python examples/tune_decoding.py --model_dir demo/model --corpus_dir demo/corpus --lm demo/lm \\
        --ctc_weights 0.2 0.3 0.5 --lm_weights 0 0.2 0.4 --length_bonuses 0 0.5 1

Logs a table of CER / WER for every setting and the best one (lowest CER, then WER), and saves it into the model's
`generation_config` (with `num_beams`, `length_penalty` and the LM's path), so that `generate()`, the ASR pipeline
and `Seq2SeqTrainer` use it from then on. `--no_save` only reports.
"""

import argparse
import itertools
import logging
from pathlib import Path

from speechseq import SpeechSeqForConditionalGeneration, SpeechSeqProcessor
from speechseq.data import load_corpus
from speechseq.evaluation import error_rates, transcribe

logger = logging.getLogger("tune_decoding")


def tune(model, processor, dataset, num_beams, ctc_weights, lm_weights, length_bonuses, lm=None,
         length_penalty=0.0, batch_size=16) -> list[dict]:  # fmt: skip
    """Every setting of the grid with its CER and WER on `dataset`, best first. LM weights other than 0 need `lm`."""
    references = list(dataset["text"])
    results = []
    for ctc_weight, lm_weight, length_bonus in itertools.product(ctc_weights, lm_weights, length_bonuses):
        if lm_weight and lm is None:
            continue
        setting = {"num_beams": num_beams, "ctc_weight": ctc_weight, "lm_weight": lm_weight,
                   "length_bonus": length_bonus, "length_penalty": length_penalty}  # fmt: skip
        hypotheses, seconds = transcribe(model, processor, dataset, batch_size, lm=lm, **setting)
        results.append({**setting, **error_rates(references, hypotheses), "decode_s": seconds})
        logger.info("ctc %.2f  lm %.2f  bonus %.2f: CER %.2f%%  WER %.2f%%", ctc_weight, lm_weight, length_bonus,
                    100 * results[-1]["cer"], 100 * results[-1]["wer"])  # fmt: skip
    return sorted(results, key=lambda r: (r["cer"], r["wer"]))


def save_setting(model_dir, setting: dict, lm=None) -> None:
    """Write a setting's search options (those it has; scores and other keys are skipped) into the model's
    generation_config.json, the LM by absolute path."""
    model = SpeechSeqForConditionalGeneration.from_pretrained(model_dir)
    config = model.generation_config
    for key in ("decoding", "num_beams", "ctc_weight", "lm_weight", "length_bonus", "length_penalty"):
        if key in setting:
            setattr(config, key, setting[key])
    config.lm = str(Path(lm).resolve()) if lm and setting.get("lm_weight") else None
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
                   args.lm, args.length_penalty, args.batch_size)  # fmt: skip
    table = ["| ctc_weight | lm_weight | length_bonus | CER | WER |", "|---|---|---|---|---|"]
    table += [f"| {r['ctc_weight']} | {r['lm_weight']} | {r['length_bonus']} | {r['cer']:.2%} | {r['wer']:.2%} |"
              for r in results]  # fmt: skip
    logger.info("%s utterances of %s, %d beams:\n%s", len(dataset), args.split, args.num_beams, "\n".join(table))
    best = results[0]
    logger.info("best: ctc_weight=%s lm_weight=%s length_bonus=%s", best["ctc_weight"], best["lm_weight"],
                best["length_bonus"])  # fmt: skip
    if not args.no_save:
        save_setting(args.model_dir, best, args.lm)
        logger.info("saved into %s/generation_config.json", args.model_dir)
    return results


if __name__ == "__main__":
    main()
