#!/usr/bin/env python
"""`make demo`: build a TTS corpus, train a recogniser on the CPU, and measure it on voices it never heard.

1. builds (or reuses) a corpus in `<output_dir>/corpus` with espeak-ng, flite and piper (what is installed);
2. trains a small speechseq model with `speechseq-train` for a fixed number of steps (about a quarter of an hour on
   2 cores);
3. decodes `test_seen` and `test_unseen` greedily (the attention decoder, and the CTC head), transcribes three test
   files through `pipeline("automatic-speech-recognition")`, prints a table and writes `<output_dir>/results.json`.

    python examples/demo.py --output_dir demo [--hours 2] [--max_steps 2600]
"""

import argparse
import json
import logging
import time
from pathlib import Path

import jiwer
import torch
from transformers import pipeline

from speechseq import SpeechSeqForConditionalGeneration, SpeechSeqProcessor, load_audio
from speechseq.data import SpeechSeqDataCollator, build_corpus
from speechseq.data.corpus import available_engines
from speechseq.training import main as train

logger = logging.getLogger("demo")

# The demo's model and schedule, tuned for ~15 minutes on 2 CPU cores (see the README's demo section).
MODEL = {"d_model": 144, "encoder_layers": 6, "decoder_layers": 2, "encoder_ffn_dim": 576, "decoder_ffn_dim": 576,
         "subsampling_channels": 64, "ctc_weight": 0.3, "dropout": 0.05}  # fmt: skip


def decode(model, processor, dataset, decoding: str, batch_size: int = 32) -> list[str]:
    collate = SpeechSeqDataCollator(processor)
    hypotheses = []
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        # a character transcript is never longer than the encoder's frames: a bound for decoders that loop
        longest = int(model._get_feat_extract_output_lengths(batch["attention_mask"].sum(-1)).max())
        with torch.no_grad():
            ids = model.generate(batch["input_features"], attention_mask=batch["attention_mask"], decoding=decoding,
                                 max_new_tokens=longest)  # fmt: skip
        hypotheses += processor.batch_decode(ids, skip_special_tokens=True)
    return hypotheses


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="demo")
    parser.add_argument("--hours", type=float, default=2.0, help="training audio of the corpus")
    parser.add_argument("--max_steps", type=int, default=2600)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.time()
    out = Path(args.output_dir)

    engines = available_engines()
    if set(engines) != {"espeak", "flite", "piper"}:
        logger.warning("TTS engines found: %s (apt-get install espeak-ng flite needs root); the corpus uses those",
                       ", ".join(engines) or "none")  # fmt: skip
    corpus = build_corpus(out / "corpus", hours=args.hours, eval_utterances=200, seed=0, engines=engines)
    model_dir = out / "model"
    train_start = time.time()
    train([
        "--corpus_dir", str(out / "corpus"), "--output_dir", str(model_dir), "--preset", "small",
        "--config_overrides", json.dumps(MODEL), "--spec_augment_freq_masks", "0", "--spec_augment_time_masks", "0",
        "--do_train", "--max_steps", str(args.max_steps), "--per_device_train_batch_size", "16",
        "--learning_rate", "3e-3", "--warmup_steps", "200", "--lr_scheduler_type", "cosine", "--weight_decay", "0.01",
        "--save_steps", "400", "--save_total_limit", "1", "--logging_steps", "50", "--report_to", "tensorboard",
        "--train_sampling_strategy", "group_by_length", "--length_column_name", "length",
        "--dataloader_num_workers", "1", "--dataloader_persistent_workers", "--seed", "0",
    ])  # fmt: skip
    train_wall = time.time() - train_start

    model = SpeechSeqForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = SpeechSeqProcessor.from_pretrained(model_dir)
    results = {}
    for split in ("test_seen", "test_unseen"):
        references = list(corpus[split]["text"])
        for decoding in ("attention", "ctc"):
            hypotheses = decode(model, processor, corpus[split], decoding)
            results[f"cer_{split}_{decoding}"] = jiwer.cer(references, hypotheses)
            results[f"wer_{split}_{decoding}"] = jiwer.wer(references, hypotheses)
    best = min(("attention", "ctc"), key=lambda d: results[f"cer_test_unseen_{d}"])

    asr = pipeline("automatic-speech-recognition", model=str(model_dir))
    (out / "samples").mkdir(exist_ok=True)
    rows = []
    for row in corpus["test_unseen"].select(range(3)):
        path = out / "samples" / f"{row['id']}.flac"
        path.write_bytes(row["audio"]["bytes"])
        text = asr(str(path), generate_kwargs={"decoding": best})["text"]
        rows.append((row["voice"], path.name, row["text"], text))

    train_hours = sum(corpus["train"]["duration"]) / 3600
    summary = {
        # greedy decoding with the better of the two heads on test_unseen
        "cer_test_seen": results[f"cer_test_seen_{best}"],
        "wer_test_seen": results[f"wer_test_seen_{best}"],
        "cer_test_unseen": results[f"cer_test_unseen_{best}"],
        "wer_test_unseen": results[f"wer_test_unseen_{best}"],
        "decoding": f"greedy {best}",
        **results,
        "train_wall_s": train_wall,
        "total_wall_s": time.time() - start,
        "train_audio_hours": train_hours,
        "num_parameters": model.num_parameters(),
        "model_dir": str(model_dir),
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")

    print(f"\nspeechseq demo: {summary['num_parameters'] / 1e6:.1f}M parameters, {train_hours:.2f} h of TTS speech, "
          f"{train_wall / 60:.1f} min of training on {torch.get_num_threads()} threads\n")  # fmt: skip
    print("| split | decoding | CER | WER |\n|---|---|---|---|")
    for split in ("test_seen", "test_unseen"):
        for decoding in ("attention", "ctc"):
            print(f"| {split} | greedy {decoding} | {results[f'cer_{split}_{decoding}']:.1%} | "
                  f"{results[f'wer_{split}_{decoding}']:.1%} |")  # fmt: skip
    print("\n| unseen voice | file | reference | pipeline transcript |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nresults in {out / 'results.json'}; the model loads with pipeline('automatic-speech-recognition', "
          f"model='{model_dir}')")  # fmt: skip


if __name__ == "__main__":
    main()
