"""The benchmark suite end to end, one command: a TTS corpus, then every benchmark of `bench/` on it in order, each
in a process of its own, then one summary table.

    python bench/run.py --quick     # `make bench`: a sanity check of the whole chain (about 10 minutes on 2 cores)
    python bench/run.py --full      # `make bench-full`: the figures of the README (3 hours on 2 cores)

Results go to `bench/results/<size>/*.json` (each with the machine, commit, date and command), the work (corpus,
models, logs) to `bench/work/<size>/`; a corpus already there is reused. `--full` rewrites the table between the
`bench:begin` / `bench:end` markers of the README; `--quick` only logs it (its models are too short-lived for
their figures to mean anything but "the chain runs"). A `--quick` run keeps the run before it in
`bench/results/quick-previous/` and writes how far the timings moved between the two (the machine's noise) into
`bench/README.md`, between the `noise:begin` / `noise:end` markers.
"""

import argparse
import json
import logging
import shlex
import shutil
import sys
from pathlib import Path

from common import RESULTS, run_process

logger = logging.getLogger("bench.run")

ROOT = Path(__file__).resolve().parent.parent
README, BENCH_README = ROOT / "README.md", ROOT / "bench" / "README.md"

SIZES = {
    "quick": {
        # young models decode until their length limits: few evaluation utterances keep the suite near 10 minutes
        "hours": 0.3, "eval_utterances": 12, "clips": 8, "repeats": 2, "throughput_steps": 10, "minutes": 1.0,
        "lm_steps": 100, "ctc_weights": ["0.7"], "lm_weights": ["0.15"], "length_bonuses": ["1.0"],
        "tune_utterances": 8,
    },
    "full": {
        "hours": 3.0, "eval_utterances": 200, "clips": 32, "repeats": 3, "throughput_steps": 100, "minutes": 45.0,
        "lm_steps": 2400, "ctc_weights": ["0.5", "0.7"], "lm_weights": ["0", "0.15", "0.3"],
        "length_bonuses": ["0.5", "1.0"], "tune_utterances": 100,
    },
}  # fmt: skip


def steps(size: dict, work: Path, results: Path) -> list[tuple[str, list[str]]]:
    """The suite, in order: (name, command), paths relative to the repository root. Each benchmark writes
    `results/<name>.json`."""
    corpus, python, here = str(work / "corpus"), sys.executable, Path("bench")
    model, lm = work / "equal_budget" / "speechseq", work / "equal_budget" / "lm"
    return [
        ("corpus", [python, "examples/build_synthetic_corpus.py", "--output_dir", corpus,
                    "--hours", str(size["hours"]), "--eval_utterances", str(size["eval_utterances"]), "--seed", "0"]),
        ("feature_extraction", [python, str(here / "feature_extraction.py"), "--clips", str(size["clips"]),
                                "--repeats", str(size["repeats"])]),
        ("training_throughput", [python, str(here / "training_throughput.py"), "--corpus_dir", corpus,
                                 "--steps", str(size["throughput_steps"])]),
        ("equal_budget", [python, str(here / "equal_budget.py"), "--corpus_dir", corpus, "--work_dir",
                          str(work / "equal_budget"), "--minutes", str(size["minutes"]), "--throughput",
                          str(results / "training_throughput.json"), "--lm_steps", str(size["lm_steps"]),
                          "--ctc_weights", *size["ctc_weights"], "--lm_weights", *size["lm_weights"],
                          "--length_bonuses", *size["length_bonuses"], "--tune_utterances",
                          str(size["tune_utterances"])]),
        ("decoding", [python, str(here / "decoding.py"), "--model_dir", str(model), "--corpus_dir", corpus, "--lm",
                      str(lm), "--ngram_lm", str(work / "equal_budget" / "ngram" / "lm.arpa")]),
        ("pretrained", [python, str(here / "pretrained.py"), "--corpus_dir", corpus, "--model_dir", str(model),
                        "--lm", str(lm)]),
    ]  # fmt: skip


def ngram_rows(accuracy, method: dict, beam: str, met) -> list[tuple]:
    """The word n-gram LM's rows: WER with it against the best decoding without it, and its decoding time."""
    best, with_ngram = accuracy("speechseq", "best"), accuracy("speechseq", "best_ngram")
    plain, fused = method[beam + "_ctc"], method[beam + "_ctc_ngram"]
    return [
        ("`test_unseen` WER with the word n-gram LM", f"{with_ngram['wer']:.1%} (CER {with_ngram['cer']:.1%})",
         f"best without it {best['wer']:.1%} (CER {best['cer']:.1%})", f"{with_ngram['wer'] / best['wer'] - 1:+.0%}",
         f"<= -30%, CER not higher: {met(with_ngram['wer'] <= 0.7 * best['wer'] and with_ngram['cer'] <= best['cer'])}"),
        (f"decoding time, {beam} + CTC + n-gram", f"RTF {fused['rtf']:.4f}", f"without it {plain['rtf']:.4f}",
         f"{fused['rtf'] / plain['rtf']:.2f}", f"<= 2: {met(fused['rtf'] <= 2 * plain['rtf'])}"),
    ]  # fmt: skip


def whisper_road_rows(budget: dict, whisper: dict, met) -> list[tuple]:
    """The other road's row: speechseq's heads over Whisper tiny.en's encoder, after the same minutes, against
    Whisper tiny.en itself (its best decoding with the word n-gram; issue 18's target: a lower WER)."""
    ours = min((r for r in budget["results"] if r["system"] == "speechseq-whisper" and r["split"] == "test_unseen"
                and r["decoding"].startswith("best")), key=lambda r: r["wer"])  # fmt: skip
    return [
        (f"`test_unseen` WER over Whisper tiny.en's encoder (frozen), {budget['minutes']:g} min",
         f"{ours['wer']:.1%} ({ours['decoding']}; CER {ours['cer']:.1%})",
         f"Whisper tiny.en {whisper['wer']:.1%} (CER {whisper['cer']:.1%})", f"{ours['wer'] / whisper['wer']:.2f}",
         f"below Whisper: {met(ours['wer'] < whisper['wer'])}"),
    ]  # fmt: skip


def summary(results: Path) -> str:
    """The README's table from the suite's result files: each comparison, its ratio and its target."""
    load = lambda name: json.loads((results / f"{name}.json").read_text())  # noqa: E731
    features, training, budget = load("feature_extraction"), load("training_throughput"), load("equal_budget")
    decoding, pretrained = load("decoding"), load("pretrained")
    run = budget["run"]

    def accuracy(system, decoding_name, split="test_unseen"):
        return next(r for r in budget["results"] if (r["system"], r["decoding"], r["split"]) ==
                    (system, decoding_name, split))  # fmt: skip

    def reference(system, split="test_unseen"):
        return next(r for r in pretrained if (r["system"], r["split"]) == (system, split))

    method = {r["method"]: r for r in decoding}
    beam = next(name for name in method if name.startswith("beam") and "_" not in name)
    ours_train, theirs_train = training["results"]["speechseq"], training["results"]["speech2text"]
    # speechseq's best decoding: the tuned search with the word n-gram LM where tuning gave it a weight
    ours_best = min((r for r in budget["results"] if r["system"] == "speechseq" and r["split"] == "test_unseen"
                     and r["decoding"].startswith("best")), key=lambda r: r["wer"])  # fmt: skip
    theirs_best = min((accuracy("speech2text", d) for d in ("greedy", "beam10")), key=lambda r: r["wer"])
    whisper, sphinx = reference("whisper_tiny_en"), reference("pocketsphinx")

    def met(ok: bool) -> str:
        return "met" if ok else "**missed**"

    rows = [
        ("filterbanks, audio-s per CPU-s (peak RSS)",
         f"{features['speechseq_audio_s_per_cpu_s']:.0f} ({features['speechseq_peak_rss_mb']:.0f} MB)",
         f"Speech2Text extractor {features['speech2text_audio_s_per_cpu_s']:.0f} "
         f"({features['speech2text_peak_rss_mb']:.0f} MB)", f"{features['speedup']:.1f}x", ""),
        (f"training `{training['preset']}`, audio-s per wall-s (peak RSS)",
         f"{ours_train['audio_s_per_wall_s']:.1f} ({ours_train['peak_rss_mb'] / 1024:.1f} GB)",
         f"Speech2Text {theirs_train['audio_s_per_wall_s']:.1f} ({theirs_train['peak_rss_mb'] / 1024:.1f} GB)",
         f"{training['throughput_ratio']:.2f}x", f">= 1.2x: {met(training['throughput_ratio'] >= 1.2)}"),
        (f"`test_unseen` WER after {budget['minutes']:g} min of training",
         f"{ours_best['wer']:.1%} ({ours_best['decoding']})",
         f"Speech2Text {theirs_best['wer']:.1%} ({theirs_best['decoding']})", f"{budget['wer_ratio_test_unseen']:.2f}",
         f"<= 0.75: {met(budget['wer_ratio_test_unseen'] <= 0.75)}"),
        ("`test_unseen` WER against pretrained recognisers", f"{reference('speechseq_best')['wer']:.1%}",
         f"Whisper tiny.en {whisper['wer']:.1%}, PocketSphinx {sphinx['wer']:.1%}",
         f"{reference('speechseq_best')['wer'] / whisper['wer']:.2f} of Whisper's",
         f"below Whisper: {met(reference('speechseq_best')['wer'] < whisper['wer'])}"),
        *(whisper_road_rows(budget, whisper, met) if any(r["system"] == "speechseq-whisper"
                                                          for r in budget["results"]) else []),
        (f"decoding time, {beam} (decoder alone)", f"RTF {method[beam]['rtf']:.4f}",
         f"transformers' beam search {method['hf_' + beam]['rtf']:.4f}",
         f"{method[beam]['rtf'] / method['hf_' + beam]['rtf']:.2f}",
         f"<= 0.8: {met(method[beam]['rtf'] <= 0.8 * method['hf_' + beam]['rtf'])}"),
        (f"decoding memory, {beam} (decoder alone), peak RSS", f"{method[beam]['peak_rss_mb']:.0f} MB",
         f"transformers' beam search {method['hf_' + beam]['peak_rss_mb']:.0f} MB",
         f"{method[beam]['peak_rss_mb'] / method['hf_' + beam]['peak_rss_mb']:.2f}", ""),
        *(ngram_rows(accuracy, method, beam, met) if beam + "_ctc_ngram" in method else []),
        (f"decoding time, {beam} + CTC + LM", f"RTF {method[beam + '_ctc_lm']['rtf']:.4f}",
         f"greedy {method['greedy']['rtf']:.4f}", f"{method[beam + '_ctc_lm']['rtf'] / method['greedy']['rtf']:.2f}",
         f"<= 3: {met(method[beam + '_ctc_lm']['rtf'] <= 3 * method['greedy']['rtf'])}"),
        (f"WER, {beam} + CTC + LM against greedy", f"{method[beam + '_ctc_lm']['wer']:.1%}",
         f"greedy {method['greedy']['wer']:.1%}",
         f"{method[beam + '_ctc_lm']['wer'] / method['greedy']['wer'] - 1:+.0%}",
         f"<= -15%: {met(method[beam + '_ctc_lm']['wer'] <= 0.85 * method['greedy']['wer'])}"),
    ]  # fmt: skip
    machine = run["machine"]
    lines = [
        f"Measured {run['date']} at commit `{run['commit']}` on {machine['cpu']} ({machine['cores']} cores, torch "
        f"{machine['torch']}, transformers {machine['transformers']}); corpus {budget['corpus_hours']:.1f} h of TTS "
        f"speech, `test_unseen` {accuracy('speechseq', 'best')['utterances']} utterances of voices no training "
        "utterance uses.",
        "",
        "| comparison | speechseq | against | ratio | target |",
        "|---|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        "Peak resident memory of each decoding method, each in a process of its own that loads the model (and the LM) "
        "and the split, then decodes; in brackets, its peak before decoding: "
        + ", ".join(f"{name} {r['peak_rss_mb']:.0f} MB ({r['loaded_rss_mb']:.0f})" for name, r in method.items())
        + f". Filterbanks: speechseq {features['speechseq_peak_rss_mb']:.0f} MB "
        f"({features['speechseq_loaded_rss_mb']:.0f} with the clips in memory), Speech2Text's extractor "
        f"{features['speech2text_peak_rss_mb']:.0f} MB ({features['speech2text_loaded_rss_mb']:.0f}).",
        "",
        "Accuracy at an equal training budget and against pretrained recognisers (CER / WER, real-time factor):",
        "",
        "| system | decoding | `test_seen` | `test_unseen` | RTF (`test_unseen`) |",
        "|---|---|---|---|---|",
    ]
    for record in budget["results"]:
        if record["split"] == "test_unseen":
            seen = accuracy(record["system"], record["decoding"], "test_seen")
            lines.append(f"| {record['system']} ({budget['minutes']:g} min) | {record['decoding']} | "
                         f"{seen['cer']:.1%} / {seen['wer']:.1%} | {record['cer']:.1%} / {record['wer']:.1%} | "
                         f"{record['rtf']:.3f} |")  # fmt: skip
    for record in pretrained:
        if record["split"] == "test_unseen" and not record["system"].startswith("speechseq"):
            seen = reference(record["system"], "test_seen")
            lines.append(f"| {record['system']} (pretrained) | its own | {seen['cer']:.1%} / {seen['wer']:.1%} | "
                         f"{record['cer']:.1%} / {record['wer']:.1%} | {record['rtf']:.3f} |")  # fmt: skip
    lines += ["", "Commands (from the repository root; `python bench/run.py --full` runs them all in this order):", ""]
    for name in ("feature_extraction", "training_throughput", "equal_budget", "decoding", "pretrained"):
        record = load(name)
        made = (record[0] if isinstance(record, list) else record)["run"]
        lines.append(f"- {name} ({made['date']}, `{made['commit']}`): `{made['command']}`")
        for system, trained in record.get("training_runs", {}).items() if isinstance(record, dict) else ():
            # decoded again (--decode_only): where each model comes from
            lines.append(f"  ({system}'s model trained {trained['date']} at `{trained['commit']}`: "
                         f"`{trained['command']}`)")
        for system, kept in record.get("kept_runs", {}).items() if isinstance(record, dict) else ():
            trained, decoded = kept["trained"], kept["decoded"]
            lines.append(f"  ({system}'s figures kept from the run of {decoded['date']} at `{decoded['commit']}`, "
                         f"its model trained {trained['date']} at `{trained['commit']}`: `{trained['command']}`)")
    return "\n".join(lines)


def noise(previous: Path, current: Path) -> str:
    """How far the same timings moved between two runs of the suite: a markdown table."""

    def figures(results: Path) -> dict[str, float]:
        load = lambda name: json.loads((results / f"{name}.json").read_text())  # noqa: E731
        features, training, pretrained = load("feature_extraction"), load("training_throughput"), load("pretrained")
        rtf = {r["method"]: r["rtf"] for r in load("decoding")}
        beam = next(name for name in rtf if name.startswith("beam") and "_" not in name)
        whisper = next(r for r in pretrained if (r["system"], r["split"]) == ("whisper_tiny_en", "test_unseen"))
        return {
            "filterbanks, speechseq audio-s per CPU-s": features["speechseq_audio_s_per_cpu_s"],
            "filterbanks, speedup over Speech2Text's extractor": features["speedup"],
            "training, speechseq audio-s per wall-s": training["results"]["speechseq"]["audio_s_per_wall_s"],
            "training, speechseq / Speech2Text throughput": training["throughput_ratio"],
            "decoding RTF, greedy": rtf["greedy"],
            f"decoding RTF, {beam}": rtf[beam],
            f"decoding RTF, {beam} + CTC + LM": rtf[f"{beam}_ctc_lm"],
            f"decoding RTF, {beam} / transformers' {beam}": rtf[beam] / rtf[f"hf_{beam}"],
            "Whisper tiny.en RTF": whisper["rtf"],
        }

    before, after = figures(previous), figures(current)
    runs = [json.loads((path / "equal_budget.json").read_text())["run"] for path in (previous, current)]
    lines = [
        f"Two runs of `python bench/run.py --quick`: {runs[0]['date']} at `{runs[0]['commit']}` and {runs[1]['date']} "
        f"at `{runs[1]['commit']}`, {runs[1]['machine']['cpu']} ({runs[1]['machine']['cores']} cores). Spread: the "
        "difference over the mean of the two.",
        "",
        "| figure | run 1 | run 2 | spread |",
        "|---|---|---|---|",
    ]
    for name, a in before.items():
        b = after[name]
        lines.append(f"| {name} | {a:.4g} | {b:.4g} | {abs(a - b) / ((a + b) / 2):.0%} |")
    return "\n".join(lines)


def replace_section(path: Path, marker: str, text: str) -> None:
    """Put `text` between the `<!-- marker:begin -->` and `<!-- marker:end -->` lines of `path`."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    content = path.read_text()
    if begin not in content or end not in content:
        raise ValueError(f"{path} has no {begin} ... {end} markers to put the table between")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--quick", action="store_const", const="quick", dest="size")
    size.add_argument("--full", action="store_const", const="full", dest="size")
    parser.add_argument("--only", nargs="+", help="run these steps alone (their inputs must be there)")
    parser.add_argument("--systems", nargs="+", help="equal_budget trains and decodes these alone (speechseq, "
                        "speechseq-whisper, speech2text), keeping the others' figures from the results already there")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    work, results = Path("bench") / "work" / args.size, (RESULTS / args.size).relative_to(ROOT)
    (ROOT / work).mkdir(parents=True, exist_ok=True)
    previous = RESULTS / f"{args.size}-previous"
    if args.size == "quick" and not args.only and (ROOT / results).is_dir():
        shutil.rmtree(previous, ignore_errors=True)
        (ROOT / results).rename(previous)
    for name, command in steps(SIZES[args.size], work, results):
        if args.only and name not in args.only:
            continue
        if name != "corpus":
            command += ["--output", str(results / f"{name}.json")]
        if name == "equal_budget" and args.systems:
            command += ["--systems", *args.systems]
        logger.info("%s: %s", name, shlex.join(["python", *command[1:]]))
        outcome = run_process(command, ROOT / work / f"{name}.log", cwd=ROOT)
        logger.info("%s done in %.1f min (log %s)", name, outcome["process_wall_s"] / 60, work / f"{name}.log")

    table = summary(ROOT / results)
    logger.info("\n%s", table)
    if args.size == "full":
        replace_section(README, "bench", table)
        logger.info("README.md table updated")
    elif previous.is_dir():
        spread = noise(previous, ROOT / results)
        logger.info("\n%s", spread)
        replace_section(BENCH_README, "noise", spread)
        logger.info("bench/README.md noise table updated")


if __name__ == "__main__":
    main()
