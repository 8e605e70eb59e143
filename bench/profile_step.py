"""Where a training step's time goes: the demo's model on real batches of a corpus, timed, then profiled by operator.

    python bench/profile_step.py --corpus_dir demo/corpus [--config_overrides '{"subsampling_channels": 32}']

Takes `--batches` shuffled batches of `--batch_size` training utterances, collates them as the Trainer's dataloader
would (timed apart: a dataloader worker does that work in training), runs forward, backward and an AdamW step on
each (the first two untimed, as warm-up), prints the mean step time, then profiles `--profile_steps` more steps
with `torch.profiler` and prints the operators that took the most time. Run it with nothing else on the cores.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from speechseq import SpeechSeqConfig, SpeechSeqFeatureExtractor, SpeechSeqForConditionalGeneration, SpeechSeqProcessor
from speechseq.data import SpeechSeqDataCollator, load_corpus
from speechseq.tokenization_speechseq import special_token_ids, train_tokenizer

sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
from demo import MODEL  # noqa: E402

logger = logging.getLogger("bench.profile_step")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus_dir", required=True)
    parser.add_argument("--config_overrides", default="{}", help="JSON of model fields over the demo's MODEL")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=12, help="timed steps, plus two of warm-up")
    parser.add_argument("--profile_steps", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (recompiled for new shapes); the "
                        "warm-up steps, compilation included, are timed apart")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    train = load_corpus(args.corpus_dir)["train"]
    tokenizer = train_tokenizer(train["text"], kind="char")
    processor = SpeechSeqProcessor(SpeechSeqFeatureExtractor(), tokenizer)
    config = SpeechSeqConfig.from_preset("small", **special_token_ids(tokenizer), spec_augment_freq_masks=0,
                                         spec_augment_time_masks=0, **{**MODEL, **json.loads(args.config_overrides)})
    torch.manual_seed(args.seed)
    model = SpeechSeqForConditionalGeneration(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    rows = train.shuffle(seed=args.seed).select(range(args.batch_size * (args.batches + 2 + args.profile_steps)))
    collate = SpeechSeqDataCollator(processor)
    began = time.perf_counter()
    batches = [collate([rows[i] for i in range(start, start + args.batch_size)])
               for start in range(0, len(rows), args.batch_size)]  # fmt: skip
    collate_ms = 1000 * (time.perf_counter() - began) / len(batches)

    def step(batch):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    if args.compile:
        model = torch.compile(model)
    began = time.perf_counter()
    for batch in batches[:2]:
        step(batch)
    warmup_s = time.perf_counter() - began
    began = time.perf_counter()
    for batch in batches[2 : 2 + args.batches]:
        step(batch)
    step_ms = 1000 * (time.perf_counter() - began) / args.batches
    frames = sum(int(b["attention_mask"].sum()) for b in batches[2 : 2 + args.batches]) / args.batches
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for batch in batches[2 + args.batches :]:
            step(batch)
    logger.info("%s", profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    logger.info("%.2fM parameters, %d threads: %.0f ms a step (forward, backward, AdamW) for %d utterances of %.0f "
                "frames in all; collating a batch %.0f ms; the two warm-up steps %.1f s",
                sum(p.numel() for p in model.parameters()) / 1e6, torch.get_num_threads(), step_ms, args.batch_size,
                frames, collate_ms, warmup_s)  # fmt: skip


if __name__ == "__main__":
    main()
