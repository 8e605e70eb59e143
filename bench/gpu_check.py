"""What only a GPU can check: mixed-precision training and decoding on CUDA against the CPU, for the day one is there.

    python bench/gpu_check.py [--steps 200] [--output bench/results/gpu_check.json]
    python bench/gpu_check.py --dry_run --steps 5      # the same code on the CPU (the tests run this)

On CUDA it trains the demo's model shape (`examples/demo.py` MODEL) from the same seed on the same synthetic batches
(tone "utterances" of random lengths and transcripts, padded) for `--steps` steps three times: fp32, fp16 autocast with
a `GradScaler` (counting the steps it skipped on inf/nan gradients) and bf16 autocast (where the GPU has it), timing
each; then it decodes the same padded batch with the fp32-trained model on CUDA and on the CPU, greedy, beam 10 and
beam 10 + CTC, and says whether the transcripts are equal (TF32 off, so that CUDA computes in true fp32) and how far
the encoder's outputs differ. With no CUDA GPU it says so and exits (status 0) unless `--dry_run`, which runs
everything on the CPU (bf16 autocast, fp16 with the CPU's GradScaler) so that the script itself stays tested.
"""

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from speechseq import (SpeechSeqConfig, SpeechSeqFeatureExtractor, SpeechSeqForConditionalGeneration,
                       SpeechSeqProcessor, special_token_ids, train_tokenizer)  # fmt: skip

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
from common import write_results  # noqa: E402
from demo import MODEL  # noqa: E402

logger = logging.getLogger("bench.gpu_check")
WORDS = ["hello", "world", "good", "morning", "speech", "model", "check", "the", "device"]
DECODINGS = {"greedy": {}, "beam 10": {"num_beams": 10}, "beam 10 + CTC": {"num_beams": 10, "ctc_weight": 0.3}}


def synthetic_batches(processor, count: int, batch_size: int, seed: int) -> list[dict]:
    """Padded batches of amplitude-modulated tones (0.6-2.4 s) with random three-word transcripts."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        audio, texts = [], []
        for _ in range(batch_size):
            t = np.arange(int(rng.uniform(0.6, 2.4) * 16000)) / 16000
            freqs = rng.uniform(200, 3000, size=3)
            audio.append((0.1 * sum(np.sin(2 * np.pi * f * t) for f in freqs) / 3).astype(np.float32))
            texts.append(" ".join(rng.choice(WORDS, size=3)))
        batches.append(dict(processor(audio=audio, sampling_rate=16000, text=texts, return_tensors="pt")))
    return batches


def train(config, batches, device, precision: str, seed: int) -> tuple[SpeechSeqForConditionalGeneration, dict]:
    """`len(batches)` AdamW steps in `precision` ("fp32", "fp16" with a GradScaler, "bf16"); the model and figures."""
    torch.manual_seed(seed)
    model = SpeechSeqForConditionalGeneration(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    skipped, losses = 0, []
    synchronize(device)
    began = time.perf_counter()
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(**batch).loss
        scaler.scale(loss).backward()
        scale = scaler.get_scale() if scaler.is_enabled() else None
        scaler.step(optimizer)
        scaler.update()
        if scale is not None and scaler.get_scale() < scale:  # the scaler lowered its scale: it skipped this step
            skipped += 1
        optimizer.zero_grad()
        losses.append(loss.item())
    synchronize(device)
    seconds = time.perf_counter() - began
    finite = bool(np.isfinite(losses).all())
    return model.eval(), {"precision": precision, "steps": len(batches), "seconds_per_step": seconds / len(batches),
                          "first_loss": losses[0], "last_loss": losses[-1], "finite": finite, "skipped_steps": skipped}


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def compare_decoding(model, batch, device) -> dict:
    """The same model and padded batch decoded on `device` and on the CPU: equal transcripts, largest difference of
    the encoder's outputs, and each device's time."""
    features, mask = batch["input_features"], batch["attention_mask"]
    results = {}
    cpu_model = SpeechSeqForConditionalGeneration(model.config).eval()
    cpu_model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    encoded = {}
    for name, (m, d) in {"device": (model, device), "cpu": (cpu_model, torch.device("cpu"))}.items():
        encoded[name] = m.encode(features.to(d), mask.to(d))[0].cpu()
    results["encoder_max_abs_difference"] = float((encoded["device"] - encoded["cpu"]).abs().max())
    for decoding, options in DECODINGS.items():
        outputs, seconds = {}, {}
        for name, (m, d) in {"device": (model, device), "cpu": (cpu_model, torch.device("cpu"))}.items():
            synchronize(d)
            began = time.perf_counter()
            outputs[name] = m.generate(features.to(d), attention_mask=mask.to(d), max_new_tokens=30, **options).cpu()
            synchronize(d)
            seconds[name] = time.perf_counter() - began
        results[decoding] = {"equal": bool(torch.equal(outputs["device"], outputs["cpu"])),
                             "device_s": seconds["device"], "cpu_s": seconds["cpu"]}  # fmt: skip
    return results


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--dry_run", action="store_true", help="run everything on the CPU, to test the script")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="default: bench/results/gpu_check.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if not torch.cuda.is_available() and not args.dry_run:
        logger.info("No CUDA GPU here (torch %s): nothing checked. Run it where `torch.cuda.is_available()` is True, "
                    "or with --dry_run to exercise it on the CPU.", torch.__version__)  # fmt: skip
        return None
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 as on the CPU
    tokenizer = train_tokenizer(WORDS, kind="char")
    processor = SpeechSeqProcessor(SpeechSeqFeatureExtractor(), tokenizer)
    config = SpeechSeqConfig.from_preset("small", **special_token_ids(tokenizer), **MODEL)
    batches = synthetic_batches(processor, args.steps, args.batch_size, args.seed)

    precisions = ["fp32", "fp16"]
    if device.type == "cpu" or torch.cuda.is_bf16_supported():
        precisions.append("bf16")
    training, models = [], {}
    for precision in precisions:
        models[precision], figures = train(config, batches, device, precision, args.seed)
        training.append(figures)
        logger.info("%-4s %d steps: %.0f ms a step, loss %.4f -> %.4f, %d skipped by the GradScaler%s", precision,
                    figures["steps"], 1000 * figures["seconds_per_step"], figures["first_loss"], figures["last_loss"],
                    figures["skipped_steps"], "" if figures["finite"] else ", NON-FINITE LOSSES")  # fmt: skip
    decoding = compare_decoding(models["fp32"], batches[0], device)
    for name, row in decoding.items():
        if isinstance(row, dict):
            logger.info("%-14s transcripts on %s and on the CPU %s (%.2f s and %.2f s)", name, device.type,
                        "equal" if row["equal"] else "DIFFER", row["device_s"], row["cpu_s"])  # fmt: skip
    logger.info("encoder outputs differ by at most %.2e between %s and the CPU", decoding["encoder_max_abs_difference"],
                device.type)  # fmt: skip
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (dry run)"
    results = {"device": device_name, "dry_run": args.dry_run, "training": training, "decoding": decoding}
    path = write_results("gpu_check", results, args.output)
    logger.info("wrote %s", path)
    return results


if __name__ == "__main__":
    main()
