"""Training throughput of speechseq against transformers' Speech2Text of the same shape, in the same run.

Both are trained by the same program (`speechseq-train`, `--architecture speechseq|speech2text`) on the same corpus
with the same flags for the same number of steps, one after the other, each in its own process. Reported: audio-
seconds of training data per wall-second, peak resident memory of the process, parameters, and dev CER after the
steps (greedy decoding of 50 dev utterances).

    python bench/training_throughput.py --corpus_dir corpus [--steps 100] [--preset small]
"""

import argparse
import json
import logging
import math
import sys
import tempfile
from pathlib import Path

from safetensors import safe_open

from speechseq.data import load_corpus

from common import run_process, write_results

logger = logging.getLogger("bench.training_throughput")


def run(architecture: str, args, output_dir: Path) -> dict:
    command = [
        sys.executable, "-m", "speechseq.training", "--corpus_dir", args.corpus_dir, "--output_dir", str(output_dir),
        "--architecture", architecture, "--preset", args.preset, "--do_train", "--do_eval", "--predict_with_generate",
        "--max_steps", str(args.steps), "--per_device_train_batch_size", str(args.batch_size),
        "--per_device_eval_batch_size", "16", "--learning_rate", "1e-3", "--warmup_steps", str(args.steps // 10),
        "--max_eval_samples", "50", "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
        "--logging_steps", "10", "--seed", "0", "--train_sampling_strategy", "group_by_length",
        "--length_column_name", "length", "--dataloader_num_workers", "1", "--generation_max_length", "120",
    ]  # fmt: skip
    result = run_process(command, output_dir.parent / f"{architecture}.log")
    with safe_open(output_dir / "model.safetensors", "pt") as weights:
        parameters = sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    train = json.loads((output_dir / "train_results.json").read_text())
    evaluation = json.loads((output_dir / "eval_results.json").read_text())
    return {
        "train_runtime_s": train["train_runtime"],
        "train_samples_per_s": train["train_samples_per_second"],
        "parameters_stored": parameters,
        "dev_cer": evaluation["eval_cer"],
        "dev_wer": evaluation["eval_wer"],
        **result,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus_dir", required=True)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--output", help="default: bench/results/training_throughput.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    train = load_corpus(args.corpus_dir)["train"]
    mean_duration = sum(train["duration"]) / len(train)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for architecture in ("speechseq", "speech2text"):
            logger.info("training %s for %d steps", architecture, args.steps)
            result = run(architecture, args, Path(tmp) / architecture)
            result["audio_s_per_wall_s"] = result["train_samples_per_s"] * mean_duration
            results[architecture] = result
            logger.info("%s: %s", architecture, json.dumps(result))
    report = {
        "benchmark": "training_throughput",
        "preset": args.preset,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "mean_utterance_s": mean_duration,
        "results": results,
        "throughput_ratio": results["speechseq"]["audio_s_per_wall_s"] / results["speech2text"]["audio_s_per_wall_s"],
    }
    write_results("training_throughput", report, args.output)
    logger.info("speechseq / Speech2Text training throughput: %.2fx", report["throughput_ratio"])


if __name__ == "__main__":
    main()
