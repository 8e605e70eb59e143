"""What each training strategy and "Echo" variant buys, at an equal CPU budget (issue 6).

    python bench/ablations.py --corpus_dir bench/work/full/corpus --work_dir bench/work/ablations --minutes 20 \\
        --throughput bench/results/full/training_throughput.json

Every variant is the `small` preset trained by `speechseq-train` with `equal_budget.train`'s flags (those Speech2Text
trains with there: same corpus, same wall-clock minutes, the schedule sized from the baseline's measured rate), then
decoded the same way on `test_unseen`: greedy (the attention decoder), greedy CTC, and beam 10 with CTC weight 0.5
(no language model, so that the decoder started from one gains nothing at decoding time).

  baseline       the default model
  decoder_lm     decoder started from a language model of its shape (`examples/run_lm.py` on the training text,
                 `--lm_steps` steps, not counted in the budget), frozen for the first 10% of the steps
  progressive    1 + 1 layers, half of each stack from 25% of the steps (the old layers paused for 5%), all from
                 50% (12 + 6 for `small`)
  rotary         `position_embedding="rotary"`
  soft_mask      `attention_mask_mode="soft"`
  fusion         `input_mode="fusion"`: log-mel and waveform front ends, blended by a learned weight

A variant slower per step than the baseline takes fewer steps in the same minutes, and ends its budget before its
learning-rate schedule does: that is part of what it costs. `--readme` puts the table into the README, between the
`ablations:begin` / `ablations:end` markers.
"""

import json
import logging
import sys
from pathlib import Path

from speechseq import SpeechSeqConfig, SpeechSeqForConditionalGeneration, SpeechSeqProcessor
from speechseq.data import load_corpus

from common import run_process, write_results
from equal_budget import EXAMPLES, budget_parser, decode, planned_steps, train
from run import README, replace_section

logger = logging.getLogger("bench.ablations")

VARIANTS = ("baseline", "decoder_lm", "progressive", "rotary", "soft_mask", "fusion")


def variant_flags(name: str, max_steps: int, lm_dir: Path, preset: str) -> list[str]:
    """The flags that make `name` out of the baseline's command."""
    if name == "decoder_lm":
        return ["--decoder_lm_path", str(lm_dir), "--freeze_decoder_steps", str(max_steps // 10)]
    if name == "progressive":  # one layer each, then half of them, then all
        config = SpeechSeqConfig.from_preset(preset)
        encoder, decoder = config.encoder_layers, config.decoder_layers
        stages = [
            {"step": 0, "encoder_layers": 1, "decoder_layers": 1},
            {"step": max_steps // 4, "encoder_layers": max(1, encoder // 2), "decoder_layers": max(1, decoder // 2),
             "freeze_old_steps": max_steps // 20},
            {"step": max_steps // 2, "encoder_layers": encoder, "decoder_layers": decoder},
        ]  # fmt: skip
        return ["--progressive_schedule", json.dumps(stages)]
    overrides = {"rotary": {"position_embedding": "rotary"}, "soft_mask": {"attention_mask_mode": "soft"},
                 "fusion": {"input_mode": "fusion"}}.get(name)  # fmt: skip
    return ["--config_overrides", json.dumps(overrides)] if overrides else []


def main():
    parser = budget_parser(__doc__.splitlines()[0], minutes=20.0)  # --lm_steps: the decoder_lm variant's LM
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--eval_utterances", type=int, default=None, help="of test_unseen (default: all)")
    parser.add_argument("--readme", action="store_true", help="write the table into the README")
    parser.add_argument("--output", help="default: bench/results/ablations.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    max_steps = planned_steps("speechseq", args)
    rows = load_corpus(args.corpus_dir)["test_unseen"]
    if args.eval_utterances:
        rows = rows.select(range(min(args.eval_utterances, len(rows))))

    lm_dir, records = work / "lm", []
    for name in args.variants:
        if name == "decoder_lm" and not (lm_dir / "config.json").exists():
            tokenizer_dir = work / "baseline"  # the language model must share the model's tokens: the baseline's
            if not (tokenizer_dir / "tokenizer.json").exists():
                raise ValueError("decoder_lm takes the baseline's tokenizer: run the baseline variant first")
            logger.info("training the decoder's language model (%d steps)", args.lm_steps)
            run_process([
                sys.executable, str(EXAMPLES / "run_lm.py"), "--tokenizer_name_or_path", str(tokenizer_dir),
                "--corpus_dir", args.corpus_dir, "--output_dir", str(lm_dir), "--preset", args.preset,
                "--config_overrides", json.dumps({"dropout": 0.0}), "--max_steps", str(args.lm_steps),
                "--per_device_train_batch_size", "64", "--learning_rate", "1e-3", "--warmup_steps", "100",
                "--lr_scheduler_type", "cosine", "--weight_decay", "0.01", "--save_strategy", "no",
                "--logging_steps", "100", "--report_to", "none", "--seed", "0",
                "--train_sampling_strategy", "group_by_length", "--length_column_name", "length",
            ], work / "lm.log")  # fmt: skip
        logger.info("training %s for %.1f minutes", name, args.minutes)
        training = train("speechseq", args, work / name, max_steps, variant_flags(name, max_steps, lm_dir, args.preset))
        model = SpeechSeqForConditionalGeneration.from_pretrained(work / name).eval()
        processor = SpeechSeqProcessor.from_pretrained(work / name)
        decodings = [
            decode(name, "greedy", "test_unseen", model, processor, rows, num_beams=1, ctc_weight=0.0),
            decode(name, "greedy_ctc", "test_unseen", model, processor, rows, decoding="ctc", num_beams=1),
            decode(name, "beam10_ctc", "test_unseen", model, processor, rows, num_beams=10, ctc_weight=0.5,
                   length_penalty=0.0),
        ]  # fmt: skip
        records.append({"variant": name, "training": training, "decodings": decodings})
        logger.info("%s: %s", name, json.dumps(records[-1]))

    report = {"benchmark": "ablations", "minutes": args.minutes, "preset": args.preset, "max_steps": max_steps,
              "variants": records}  # fmt: skip
    path = write_results("ablations", report, args.output)
    table = render(json.loads(path.read_text()))  # with the run's provenance
    logger.info("\n%s\nwrote %s", table, path)
    if args.readme:
        replace_section(README, "ablations", table)


def render(report: dict) -> str:
    """The README's table: each variant's steps and `test_unseen` CER / WER with each decoding."""
    run = report["run"]
    lines = [
        f"`python {run['command'].split('python ', 1)[-1]}`: {report['minutes']:g} min of training each, "
        f"{run['date']}, commit `{run['commit']}`, {run['machine']['cpu']} ({run['machine']['cores']} cores).",
        "",
        "| variant | steps | greedy CER / WER | greedy CTC CER / WER | beam 10 + CTC CER / WER |",
        "|---|---|---|---|---|",
    ]
    for record in report["variants"]:
        cells = [f"{d['cer']:.1%} / {d['wer']:.1%}" for d in record["decodings"]]
        lines.append(f"| {record['variant']} | {record['training']['steps']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
