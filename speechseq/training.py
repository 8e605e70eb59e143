"""Train a speechseq recogniser with `Seq2SeqTrainer`: the code behind `speechseq-train` and
`examples/run_speech_recognition_seq2seq.py`.

In the style of transformers' `run_speech_recognition_seq2seq.py`: three argument groups (model, data,
`Seq2SeqTrainingArguments` plus `--max_train_minutes`, a wall-clock budget), parsed from the command line or one JSON
file. It runs as it is on one CPU, and under `accelerate launch` on many processes, GPUs or machines (DDP; `--bf16`,
`--fp16`, `--gradient_accumulation_steps`).

    speechseq-train --corpus_dir corpus --output_dir model --preset small --tokenizer_kind char \\
        --per_device_train_batch_size 32 --learning_rate 1e-3 --max_steps 20000 --eval_strategy steps \\
        --eval_steps 1000 --save_steps 1000 --predict_with_generate --train_sampling_strategy group_by_length
"""

import dataclasses
import functools
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import transformers
from accelerate.utils import DistributedType
from datasets import Dataset, load_dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser, Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback, set_seed
from transformers.trainer_callback import ExportableState, ProgressCallback
from transformers.trainer_utils import seed_worker

from .attention_plots import AttentionPlots
from .checkpoint_averaging import choose_checkpoints, write_average
from .configuration_speechseq import SpeechSeqConfig
from .data.augmentation import SpeechAugmentation
from .data.collator import SpeechSeqDataCollator
from .data.loaders import (
    from_hf_dataset,
    load_assignment_split,
    load_audio_folder,
    load_corpus,
    load_manifest,
    prepare_dataset,
    read_features,
)
from .data.sampler import FrameBudgetBatchSampler
from .feature_extraction_speechseq import SpeechSeqFeatureExtractor
from .metrics import load_metric
from .modeling_speechseq import (
    ConformerLayer,
    SpeechSeqDecoder,
    SpeechSeqDecoderLayer,
    SpeechSeqEncoder,
    SpeechSeqEncoderLayer,
    SpeechSeqForConditionalGeneration,
)
from .processing_speechseq import SpeechSeqProcessor
from .tokenization_speechseq import load_tokenizer, special_token_ids, suppressed_token_ids, train_tokenizer

__all__ = ["ModelArguments", "DataArguments", "SpeechSeqTrainingArguments", "SpeechSeqTrainer", "WallClockBudget",
           "Stage", "ProgressiveTraining", "read_stages", "main", "build_processor_and_model", "load_split",
           "log_to_file", "end_training"]  # fmt: skip

logger = logging.getLogger("speechseq.training")
_LOG_HANDLERS: list[logging.Handler] = []  # those log_to_file installed last


def log_to_file(output_dir, level: int = logging.INFO) -> Path:
    """Log transformers' records (its configuration and argument dumps run to thousands of lines) and speechseq's
    details to `<output_dir>/train.log`; on the console, transformers' warnings only, beside the root logger's own
    handler (speechseq's short progress lines) and the Trainer's progress bar. A second call (another run in the same
    process) replaces the handlers of the first.

    Returns:
        `Path`: the log file.
    """
    path = Path(output_dir) / "train.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    library, root, details = transformers.utils.logging, logging.getLogger(), logging.getLogger("speechseq.details")
    for handler in _LOG_HANDLERS:
        library.remove_handler(handler)
        root.removeHandler(handler)
        details.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    to_file, warnings = logging.FileHandler(path), logging.StreamHandler(sys.stdout)
    to_file.setFormatter(formatter)
    warnings.setFormatter(formatter)
    warnings.setLevel(logging.WARNING)
    library.disable_default_handler()  # transformers' loggers do not propagate: they have handlers of their own
    library.add_handler(to_file)
    library.add_handler(warnings)
    library.set_verbosity(level)
    root.addHandler(to_file)
    details.propagate = False  # the file only
    details.addHandler(to_file)
    logging.getLogger("speechseq").setLevel(level)
    _LOG_HANDLERS[:] = [to_file, warnings]
    return path


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved speechseq model (and processor) to train further."}
    )
    preset: str = field(default="small", metadata={"help": "Config preset for a new model: 'tiny' or 'small'."})
    architecture: str = field(
        default="speechseq",
        metadata={"help": "'speechseq', or 'speech2text': transformers' Speech2Text of the same shape, as a baseline."},
    )
    config_file: str | None = field(default=None, metadata={"help": "A config JSON for a new model (instead of --preset)."})
    config_overrides: str | None = field(
        default=None, metadata={"help": 'JSON of config fields to override, e.g. \'{"d_model": 192, "ctc_weight": 0.5}\'.'}
    )
    tokenizer_kind: str = field(default="char", metadata={"help": "Tokenizer to train for a new model: 'char' or 'bpe'."})
    vocab_size: int | None = field(default=None, metadata={"help": "BPE vocabulary size (1000, 5000, 10000...)."})
    tokenizer_path: str | None = field(
        default=None, metadata={"help": "A tokenizer to use instead of training one: a saved directory or a JSON file."}
    )
    pretrained_encoder: str | None = field(
        default=None,
        metadata={"help": "Start the encoder from a pretrained Whisper encoder: a faster-whisper (CTranslate2) model "
                  "directory, or a transformers Whisper directory or Hub name; with --preset whisper-tiny (or a "
                  "config of encoder_type 'whisper'). The features become Whisper's log-mels."},
    )
    trainable_encoder_layers: int | None = field(
        default=None,
        metadata={"help": "Of a pretrained Whisper encoder, train only the last N layers (0: frozen, which costs a "
                  "forward pass only); default: all. Or slow it with --learning_rates '{\"model.encoder.whisper\": 1e-4}'."},
    )
    decoder_lm_path: str | None = field(
        default=None,
        metadata={"help": "A SpeechSeqForCausalLM directory (examples/run_lm.py) to start the decoder from; its "
                  "tokenizer becomes the model's. See --freeze_decoder_steps and --learning_rates."},
    )
    normalization: str | None = field(
        default=None,
        metadata={"help": "Feature normalisation: 'utterance' (the default), 'global' (fit on train) or 'none'. Whisper's "
                  "features (--pretrained_encoder) take none."},
    )
    spec_augment_freq_masks: int = field(default=2, metadata={"help": "SpecAugment frequency masks (training only)."})
    spec_augment_freq_width: int = field(default=27, metadata={"help": "Widest frequency mask, mel bins."})
    spec_augment_time_masks: int = field(default=2, metadata={"help": "SpecAugment time masks (training only)."})
    spec_augment_time_width: int = field(default=40, metadata={"help": "Widest time mask, frames."})
    vtlp_warp: float = field(
        default=0.0,
        metadata={"help": "Vocal-tract-length perturbation (training only): warp each utterance's mel axis by a "
                  "factor from [1 - w, 1 + w]; 0.1 is usual, 0 turns it off."},
    )


@dataclass
class DataArguments:
    corpus_dir: str | None = field(default=None, metadata={"help": "A corpus made by build_synthetic_corpus.py."})
    assignment_root: str | None = field(
        default=None, metadata={"help": "The assignment's folder of train-clean-100 / dev-clean / test-clean."}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "A `datasets.load_dataset` name or local path (LibriSpeech, say)."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration."})
    train_manifest: str | None = field(
        default=None, metadata={"help": "A jsonl/csv/tsv manifest (path, text columns) or an audio folder."}
    )
    eval_manifest: str | None = field(default=None, metadata={"help": "The same, for evaluation."})
    train_split_name: str = field(default="train", metadata={"help": "Training split ('train-clean-100' for the assignment)."})
    eval_split_name: str = field(default="dev", metadata={"help": "Evaluation split ('dev-clean' for the assignment)."})
    subset: float = field(default=1.0, metadata={"help": "Fraction of each assignment split to use."})
    audio_column_name: str = field(default="audio", metadata={"help": "Audio column of a `datasets` dataset."})
    text_column_name: str = field(default="text", metadata={"help": "Transcript column of a dataset or manifest."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N evaluation rows."})
    max_duration_in_seconds: float = field(default=20.0, metadata={"help": "Skip longer utterances."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for the data checks."})
    augmentation: str | None = field(
        default=None,
        metadata={"help": 'JSON of waveform augmentations for the training batches (speechseq.data.augmentation), '
                  'e.g. \'{"speed_factors": [0.9, 1.0, 1.1], "noise_probability": 0.5, "band_limit_probability": '
                  '0.2, "reverb_probability": 0.2}\'; seeded by --seed. Audio rows only.'},
    )

    def sources(self) -> list[str]:
        given = {"corpus_dir": self.corpus_dir, "assignment_root": self.assignment_root,
                 "dataset_name": self.dataset_name, "train_manifest": self.train_manifest or self.eval_manifest}
        return [name for name, value in given.items() if value]  # fmt: skip


@dataclass
class SpeechSeqTrainingArguments(Seq2SeqTrainingArguments):
    max_train_minutes: float | None = field(
        default=None,
        metadata={"help": "Stop training after this many wall-clock minutes of training (a resumed run counts "
                  "the minutes before its checkpoint), then save as at the end (for equal-time comparisons; "
                  "--max_steps still sets the learning-rate schedule unless --schedule_by_time)."},
    )
    learning_rates: str | None = field(
        default=None,
        metadata={"help": 'JSON of parameter-name prefix -> learning rate, e.g. \'{"model.decoder": 3e-4}\' for a '
                  "pretrained decoder; the longest matching prefix wins, the rest get --learning_rate, and the "
                  "schedule scales every rate alike."},
    )
    freeze_decoder_steps: int = field(
        default=0,
        metadata={"help": "With --decoder_lm_path: leave the weights copied from the language model unchanged for "
                  "this many steps while cross-attention and the encoder learn to feed it."},
    )
    progressive_schedule: str | None = field(
        default=None,
        metadata={"help": "Progressive training: a JSON list of stages (or a file of one) that grows the model "
                  "layer by layer; see speechseq.training.Stage."},
    )
    attention_plots: bool = field(
        default=False,
        metadata={"help": "At each evaluation, draw the decoder's self- and cross-attention on the first dev "
                  "utterance and transcribe three (output_dir/attention/, and TensorBoard)."},
    )
    attention_plot_layer: int = field(default=-1, metadata={"help": "Decoder layer to plot (negative: from the end)."})
    attention_plot_head: int = field(default=-1, metadata={"help": "Head to plot; -1 plots the mean of the heads."})
    schedule_by_time: bool = field(
        default=False,
        metadata={"help": "With --max_train_minutes: run the learning-rate schedule (warm-up, decay) over the "
                  "budget's minutes rather than --max_steps, so that it ends as the budget does on any machine; "
                  "--max_steps then only caps the steps and sets the schedule's resolution."},
    )
    max_frames_per_batch: int | None = field(
        default=None,
        metadata={"help": "Batch the training utterances by padded frames (10 ms each, per device) instead of "
                  "--per_device_train_batch_size: many short utterances or few long ones to a batch, every step "
                  "about the same cost (ESPnet's batch_bins, fairseq's max_tokens)."},
    )
    sortagrad: bool = field(
        default=False,
        metadata={"help": "With --max_frames_per_batch: the first epoch's batches shortest first (SortaGrad, Deep "
                  "Speech 2), later epochs shuffled."},
    )
    average_checkpoints: int = field(
        default=0,
        metadata={"help": "At the end of training, save the mean of the last N checkpoints (speechseq-average) as "
                  "the model in --output_dir; --save_total_limit must keep at least N."},
    )


class SpeechSeqTrainer(Seq2SeqTrainer):
    """`Seq2SeqTrainer` whose optimizer gives some parameters learning rates of their own and leaves some unchanged
    for spans of steps, that may collate its training batches apart (augmented), and that logs the parts of the loss.

    Args:
        learning_rates (`dict[str, float]`): parameter-name prefix -> learning rate; the longest matching prefix wins,
            the others get `args.learning_rate`. The schedule (warm-up, decay) scales every rate alike.
        frozen_steps (`dict[str, list[tuple[int, int]]]`): parameter-name prefix -> spans `[first, end)` of steps
            in which those parameters are not updated.
        train_data_collator (*optional*): the collator of the training batches, when they differ from the
            evaluation batches (`data_collator`): waveform augmentation.

    A frozen parameter keeps `requires_grad`: its optimizer group's learning rate is 0 during the span (with AdamW:
    no step and no weight decay; its moments keep accumulating, and its gradient still counts in the norm that
    `--max_grad_norm` clips). `requires_grad=False` would not do under DDP, which
    synchronises only the parameters that wanted gradients when it wrapped the model, so a parameter thawed later
    would drift apart on every process.
    """

    # the parts of speechseq's loss, logged beside it (means over the steps since the last log)
    LOSS_PARTS = ("attention_loss", "ctc_loss", "interctc_loss", "consistency_loss")

    def __init__(self, *args, learning_rates: dict | None = None, frozen_steps: dict | None = None,
                 train_data_collator=None, data_description: str | None = None, **kwargs):  # fmt: skip
        super().__init__(*args, **kwargs)
        self.learning_rates, self.frozen_steps = learning_rates or {}, frozen_steps or {}
        self.train_data_collator = train_data_collator  # for the training batches alone (augmentation)
        self.data_description = data_description  # what the model card says it was trained on
        self._loss_parts = {}

    def create_model_card(self, *args, **kwargs):
        """transformers' model card (`README.md` in the output directory, also what `push_to_hub` uploads), with
        a section on the speechseq model: its shape, the data, the last evaluation, how its loss reads and the
        decoding setting saved with it."""
        super().create_model_card(*args, **kwargs)
        if self.is_world_process_zero() and getattr(self.model.config, "model_type", None) == "speechseq":
            with open(os.path.join(self.args.output_dir, "README.md"), "a") as card:
                card.write(speechseq_card_section(self.model, self.state, self.data_description))

    def get_train_dataloader(self):
        if getattr(self.args, "max_frames_per_batch", None):  # also under plain Seq2SeqTrainingArguments
            return self._frame_budget_dataloader()
        if self.train_data_collator is None:
            return super().get_train_dataloader()
        evaluation_collator, self.data_collator = self.data_collator, self.train_data_collator
        try:  # the dataloader keeps the collator it was built with
            return super().get_train_dataloader()
        finally:
            self.data_collator = evaluation_collator

    def _frame_budget_dataloader(self) -> DataLoader:
        """The training batches of `--max_frames_per_batch`: a [`FrameBudgetBatchSampler`] over the dataset's length
        column, split between processes by Accelerate as the Trainer's own batches are."""
        args = self.args
        if args.length_column_name not in self.train_dataset.column_names:
            raise ValueError(f"--max_frames_per_batch needs the frames of each utterance in the column "
                             f"{args.length_column_name!r} (prepare_dataset adds 'length')")  # fmt: skip
        sampler = FrameBudgetBatchSampler(
            self.train_dataset[args.length_column_name], args.max_frames_per_batch,
            seed=args.seed if args.data_seed is None else args.data_seed, sortagrad=args.sortagrad,
        )  # fmt: skip
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=self.train_data_collator or self.data_collator,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers,
            prefetch_factor=args.dataloader_prefetch_factor,
            worker_init_fn=functools.partial(seed_worker, num_workers=args.dataloader_num_workers,
                                             rank=args.process_index),  # fmt: skip
        )
        return self.accelerator.prepare(loader)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ctc_only = inputs.pop("ctc_only", False)  # a joined batch, for the CTC head alone (`join_ctc_only`)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if ctc_only and outputs.get("attention_loss") is not None:
            # the model computes its own loss (`accepts_loss_kwargs = False`: the Trainer leaves it unscaled), so
            # this takes the decoder's share out exactly: its gradients are zeros, not missing, as DDP needs
            loss = loss - (1 - self.accelerator.unwrap_model(model).config.ctc_weight) * outputs["attention_loss"]
        if model.training:
            for name in self.LOSS_PARTS:
                value = outputs.get(name) if isinstance(outputs, dict) else None
                if value is not None:
                    self._loss_parts.setdefault(name, []).append(value.detach())
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs):
        # every process logs at the same steps (the Trainer gathers its loss there too), so the gather lines up
        if "loss" in logs and self._loss_parts:
            for name, values in sorted(self._loss_parts.items()):
                logs[name] = round(self.accelerator.gather(torch.stack(values).mean()).mean().item(), 4)
            self._loss_parts.clear()
        super().log(logs, *args, **kwargs)

    def get_decay_parameter_names(self, model) -> list[str]:
        # the fusion front end's blend and the Whisper layers' mix are gates, not weights: decay would pull them
        # towards equal shares
        gates = ("fusion_logit", "layer_weights")
        return [name for name in super().get_decay_parameter_names(model) if not name.endswith(gates)]

    def create_optimizer(self, model=None):
        model = self.model if model is None else model
        if self.optimizer is None and (self.learning_rates or self.frozen_steps):
            decay = set(self.get_decay_parameter_names(model))
            groups = {}  # (learning rate, decays, frozen spans) -> parameters, in the model's order
            for name, param in model.named_parameters():
                if not param.requires_grad:  # frozen for good, as the Trainer's own optimizer leaves them
                    continue
                matches = [prefix for prefix in self.learning_rates if name.startswith(prefix)]
                lr = self.learning_rates[max(matches, key=len)] if matches else self.args.learning_rate
                spans = sorted({tuple(span) for prefix, spans in self.frozen_steps.items() if name.startswith(prefix)
                                for span in spans})  # fmt: skip
                groups.setdefault((lr, name in decay, tuple(spans)), []).append(param)
            names = [name for name, _ in model.named_parameters()]
            unmatched = [prefix for prefix in self.learning_rates if not any(n.startswith(prefix) for n in names)]
            if unmatched:
                raise ValueError(f"learning rates given for {unmatched}, which name no parameter of the model "
                                 f"(names look like {names[0]!r})")  # fmt: skip
            # the plain group first: the Trainer logs the first group's learning rate
            keys = sorted(groups, key=lambda key: (bool(key[2]), key[0] != self.args.learning_rate))
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = optimizer_cls([
                {"params": groups[key], "lr": key[0], "weight_decay": self.args.weight_decay if key[1] else 0.0,
                 "frozen_steps": [list(span) for span in key[2]]}
                for key in keys
            ], **optimizer_kwargs)  # fmt: skip
        return super().create_optimizer(model)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        groups = scheduler.optimizer.param_groups
        if getattr(self.args, "schedule_by_time", False):
            budgets = [cb for cb in self.callback_handler.callbacks if isinstance(cb, WallClockBudget)]
            if not budgets or not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                raise ValueError(f"--schedule_by_time runs a LambdaLR schedule (not --lr_scheduler_type "
                                 f"{self.args.lr_scheduler_type}) on the clock of --max_train_minutes: give both")
            scheduler.lr_lambdas = [_on_the_clock(budgets[0], num_training_steps, schedule)
                                    for schedule in scheduler.lr_lambdas]  # fmt: skip
            for group, base, schedule in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas):
                group["lr"] = base * schedule(scheduler.last_epoch)
        if any(group.get("frozen_steps") for group in groups):
            if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                raise ValueError(f"frozen steps need a LambdaLR schedule, not --lr_scheduler_type "
                                 f"{self.args.lr_scheduler_type}")  # fmt: skip
            scheduler.lr_lambdas = [_frozen_during(group.get("frozen_steps", ()), schedule)
                                    for group, schedule in zip(groups, scheduler.lr_lambdas)]  # fmt: skip
            for group, base, schedule in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas):
                group["lr"] = base * schedule(scheduler.last_epoch)
        return scheduler


def _frozen_during(spans, schedule: Callable[[int], float]) -> Callable[[int], float]:
    """`schedule`, but 0 at the steps inside `spans`. A closure, so LambdaLR's state_dict leaves it out (it saves the
    state of callable objects only) and resuming rebuilds it from the arguments."""

    def factor(step: int) -> float:
        return 0.0 if any(first <= step < end for first, end in spans) else schedule(step)

    return factor


@dataclass
class Stage:
    """One stage of progressive training, from `step` on: the model runs its first `encoder_layers` and
    `decoder_layers` layers (the others wait, untouched, at their initial weights); the layers of the stage before
    get no updates for `freeze_old_steps` steps while the new ones catch up; and each regulariser given is set
    (`None`: the latest earlier stage's value, or the model's own). In JSON, a list of these as objects, e.g.

        [{"step": 0, "encoder_layers": 1, "decoder_layers": 1, "dropout": 0.0, "label_smoothing": 0.0},
         {"step": 2000, "encoder_layers": 6, "decoder_layers": 3, "freeze_old_steps": 500, "dropout": 0.05},
         {"step": 5000, "encoder_layers": 12, "decoder_layers": 6, "dropout": 0.1, "label_smoothing": 0.1,
          "spec_augment_freq_masks": 2, "spec_augment_time_masks": 2}]
    """

    step: int
    encoder_layers: int
    decoder_layers: int
    freeze_old_steps: int = 0
    dropout: float | None = None
    label_smoothing: float | None = None
    spec_augment_freq_masks: int | None = None
    spec_augment_time_masks: int | None = None


REGULARISERS = ("dropout", "label_smoothing", "spec_augment_freq_masks", "spec_augment_time_masks")  # of a Stage


def read_stages(schedule: str | list, config: SpeechSeqConfig) -> list[Stage]:
    """Stages from JSON text, a JSON file or a list of dicts, checked against the model's `config`.

    Raises:
        ValueError: naming the stage and what is wrong with it.
    """
    if isinstance(schedule, str):
        schedule = json.loads(Path(schedule).read_text() if Path(schedule).is_file() else schedule)
    if not isinstance(schedule, list) or not schedule:
        raise ValueError(f"a progressive schedule is a non-empty JSON list of stages, got {schedule!r}")
    names = {f.name for f in dataclasses.fields(Stage)}
    stages = []
    for i, stage in enumerate(schedule):
        if not isinstance(stage, dict):
            raise ValueError(f"stage {i} of the progressive schedule is not an object: {stage!r}")
        if set(stage) - names:
            raise ValueError(f"stage {i} of the progressive schedule: unknown keys {sorted(set(stage) - names)} "
                             f"(known: {sorted(names)})")  # fmt: skip
        try:
            stages.append(Stage(**stage))
        except TypeError as error:
            raise ValueError(f"stage {i} of the progressive schedule: {error}") from None
    if stages[0].step != 0:
        raise ValueError(f"the progressive schedule must start at step 0, not {stages[0].step}")
    for i, (before, stage) in enumerate(zip(stages, stages[1:]), 1):
        if stage.step <= before.step:
            raise ValueError(f"stage {i} starts at step {stage.step}, not after stage {i - 1} ({before.step})")
        if stage.encoder_layers < before.encoder_layers or stage.decoder_layers < before.decoder_layers:
            raise ValueError(f"stage {i} has fewer layers than stage {i - 1}: stages only add layers")
    for i, stage in enumerate(stages):
        encoder, decoder = stage.encoder_layers, stage.decoder_layers
        if not (1 <= encoder <= config.encoder_layers and 1 <= decoder <= config.decoder_layers):
            raise ValueError(f"stage {i} asks for {stage.encoder_layers} encoder and {stage.decoder_layers} decoder "
                             f"layers; the model has {config.encoder_layers} and {config.decoder_layers}")  # fmt: skip
    return stages


def describe_data(data_args, train) -> str | None:
    """A line on the training data for the model card."""
    if train is None:
        return None
    local = (data_args.corpus_dir, data_args.assignment_root, data_args.train_manifest)
    names = [os.path.basename(os.path.normpath(value)) for value in local if value]  # no path of this machine
    source = f"`{data_args.dataset_name or names[0]}`" if data_args.dataset_name or names else "its data"
    hours = sum(train["duration"]) / 3600 if "duration" in train.column_names else None
    return f"{source} ({len(train)} utterances" + (f", {hours:.1f} h" if hours else "") + ")"


def speechseq_card_section(model, state, data_description: str | None) -> str:
    """The model card's speechseq section (markdown)."""
    c = model.config
    if c.encoder_type == "whisper":
        encoder = f"a pretrained Whisper encoder with {c.encoder_layers} speechseq layers over it"
    else:
        encoder = f"a {c.encoder_block} encoder of {c.encoder_layers} layers"
    shape = (f"{model.num_parameters() / 1e6:.1f}M parameters: d_model {c.d_model}, {encoder}, a decoder of "
             f"{c.decoder_layers}, a CTC head (weight {c.ctc_weight} in the loss), {c.vocab_size} tokens")
    evaluations = [entry for entry in state.log_history if "eval_loss" in entry]
    figures = ", ".join(f"{key.removeprefix('eval_').upper()} {100 * value:.1f}%" for key, value in
                        (evaluations[-1] if evaluations else {}).items() if key in ("eval_wer", "eval_cer"))  # fmt: skip
    search = {name: getattr(model.generation_config, name, None) for name in
              ("decoding", "num_beams", "ctc_weight", "lm_weight", "length_bonus", "length_penalty", "ngram_weight")}
    search = {name: value for name, value in search.items() if value is not None}
    return "\n".join([
        "", "## speechseq", "",
        f"A speechseq pre-norm encoder-decoder ASR model, {shape}, trained for {state.global_step} steps"
        + (f" on {data_description}" if data_description else "") + ".",
        "",
        f"Last evaluation (greedy unless the decoding below was set for it): {figures}." if figures else
        "No evaluation with generation was run during training (`--predict_with_generate`).",
        "",
        "`loss` and `eval_loss` are the joint loss, `(1 - ctc_weight) * label-smoothed cross-entropy + ctc_weight * "
        "CTC`: not comparable with other models' plain cross-entropy.",
        "",
        f"Decoding setting in `generation_config.json` at the end of training: `{json.dumps(search)}` "
        "(`examples/tune_decoding.py` may have tuned it since; language models it names live in this directory).",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        "asr = pipeline(\"automatic-speech-recognition\", model=\"<this directory or repository>\", "
        "trust_remote_code=True)",
        "asr(\"speech.flac\", return_timestamps=\"word\")",
        "```",
        "",
    ])  # fmt: skip


def leaves_parameters_unused(model, training_args) -> bool:
    """Whether some trainable parameters get no gradient in some steps, which DDP must know
    (`find_unused_parameters`): the layers that wait for their progressive stage, and the CTC head when no loss and
    no self-conditioning uses it (`ctc_weight=0`). Frozen spans (`frozen_steps`) keep their gradients."""
    if training_args.progressive_schedule:
        return True
    config = model.config
    if getattr(config, "model_type", None) != "speechseq":
        return False
    return config.ctc_weight == 0 and not (config.self_conditioning and config.interctc_layers)


def progressive_frozen_steps(stages: list[Stage]) -> dict[str, list[tuple[int, int]]]:
    """For `SpeechSeqTrainer(frozen_steps=...)`: each stage's `freeze_old_steps` over the layers of the stage before."""
    frozen = {}
    for before, stage in zip(stages, stages[1:]):
        if stage.freeze_old_steps:
            span = (stage.step, stage.step + stage.freeze_old_steps)
            layers = [f"model.encoder.layers.{i}." for i in range(before.encoder_layers)]
            layers += [f"model.decoder.layers.{i}." for i in range(before.decoder_layers)]
            for prefix in layers:
                frozen.setdefault(prefix, []).append(span)
    return frozen


class ProgressiveTraining(TrainerCallback):
    """Runs a progressive schedule (`Stage`s): before each step, the model uses the layers and regularisers of the
    stage that step is in. Every layer exists (and is in the optimizer) from the start, so the optimizer and the
    schedule follow the new parameters with nothing to rebuild, and a checkpoint taken mid-schedule resumes into the
    stage of its step. The old layers' pauses are the trainer's `frozen_steps` (`progressive_frozen_steps`)."""

    def __init__(self, stages: list[Stage]):
        self.stages = stages
        self.current = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._enter(state.global_step, model)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._enter(state.global_step, model)

    def _enter(self, step: int, model):
        stage = [s for s in self.stages if s.step <= step][-1]
        if stage is self.current:
            return
        self.current = stage
        config = model.config
        config.active_encoder_layers = None if stage.encoder_layers == config.encoder_layers else stage.encoder_layers
        config.active_decoder_layers = None if stage.decoder_layers == config.decoder_layers else stage.decoder_layers
        # a setting a stage leaves out keeps the latest earlier stage's value, so that the schedule alone decides it,
        # also in a run resumed into a model built afresh
        settings = {}
        for earlier in self.stages[: self.stages.index(stage) + 1]:
            settings.update({name: value for name in REGULARISERS if (value := getattr(earlier, name)) is not None})
        if "dropout" in settings:
            set_dropout(model, settings.pop("dropout"))
        for name, value in settings.items():
            setattr(config, name, value)
        logger.info("step %d: progressive stage of %d encoder and %d decoder layers", step, stage.encoder_layers,
                    stage.decoder_layers)  # fmt: skip


def set_dropout(model, p: float) -> None:
    """Set the residual and embedding dropout (`config.dropout`) of a built model."""
    for module in model.modules():
        if isinstance(module, (SpeechSeqEncoderLayer, ConformerLayer, SpeechSeqDecoderLayer, SpeechSeqEncoder,
                               SpeechSeqDecoder)):  # fmt: skip
            module.dropout.p = p
    model.config.dropout = p


class WallClockBudget(TrainerCallback, ExportableState):
    """Ends training once `minutes` of wall-clock training time have passed, counted across resumes: the time spent
    is saved in each checkpoint's `trainer_state.json`, so a killed run resumed from its checkpoint spends only
    what was left (less the time between that checkpoint and the kill). Under several processes the main process's
    clock decides and the others follow, so that all stop at the same step and see the same schedule.

    With `schedule_by_time` ([`SpeechSeqTrainer`]), the learning-rate schedule runs on this clock: `progress` is the
    fraction of the budget spent before the current step."""

    def __init__(self, minutes: float):
        self.seconds = 60 * minutes
        self.spent = 0.0  # seconds of training before the current step, earlier runs of a resumed one included
        self._before, self._began = 0.0, None

    def state(self) -> dict:
        return {"args": {"minutes": self.seconds / 60}, "attributes": {"spent": self.spent}}

    @property
    def progress(self) -> float:
        return min(1.0, self.spent / self.seconds)

    def on_train_begin(self, args, state, control, **kwargs):
        # a resumed state holds what the checkpoint saved; a fresh one holds this callback's own state (0 spent)
        saved = state.stateful_callbacks.get(type(self).__name__) if state is not None else None
        self._before = self.spent = saved["attributes"]["spent"] if isinstance(saved, dict) else 0.0
        if state is not None:  # a checkpoint of a run that had no budget lacks the entry the Trainer updates
            state.stateful_callbacks.setdefault(type(self).__name__, self.state())
        self._began = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        spent = [self._before + time.monotonic() - self._began]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast_object_list(spent, src=0)
        self.spent = spent[0]
        if self.spent >= self.seconds:
            logger.info("stopping at step %d: the %.1f-minute budget is spent", state.global_step, self.seconds / 60)
            control.should_training_stop = True
        return control


class BudgetProgressCallback(ProgressCallback):
    """Transformers' progress bar in minutes of a [`WallClockBudget`] rather than in steps, for a run whose
    schedule is on the clock (`--schedule_by_time`, where `--max_steps` is only a cap). Added after the budget, so
    that it shows the time the budget has just counted."""

    def __init__(self, budget: WallClockBudget):
        super().__init__()
        self.budget = budget

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=round(self.budget.seconds / 60, 1), unit="min", dynamic_ncols=True,
                                     bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} min [{elapsed}{postfix}]")
        self.current_step = 0

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training_bar.n = min(self.training_bar.total, round(self.budget.spent / 60, 2))
            self.training_bar.set_postfix_str(f"step {state.global_step}")


def _on_the_clock(budget: WallClockBudget, num_training_steps: int, schedule: Callable[[int], float]):
    """A step schedule driven by the budget's clock: at a fraction f of the budget it is where step f x
    `num_training_steps` would be."""

    def factor(step: int) -> float:
        return schedule(round(budget.progress * num_training_steps))

    return factor


def load_split(data: DataArguments, split: str, manifest: str | None = None) -> Dataset:
    """One split from whichever source `data` names, in the loaders' common form."""
    sources = data.sources()
    if len(sources) != 1:
        raise ValueError(f"give exactly one data source (--corpus_dir, --assignment_root, --dataset_name or "
                         f"--train_manifest/--eval_manifest), got {sources or 'none'}")  # fmt: skip
    if data.corpus_dir:
        corpus = load_corpus(data.corpus_dir)
        if split not in corpus:
            raise ValueError(f"corpus {data.corpus_dir} has no split {split!r} (it has {list(corpus)})")
        return corpus[split]
    if data.assignment_root:
        return load_assignment_split(data.assignment_root, split, data.subset)
    if data.dataset_name:
        dataset = load_dataset(data.dataset_name, data.dataset_config_name, split=split)
        return from_hf_dataset(dataset, data.audio_column_name, data.text_column_name)
    if manifest is None:
        raise ValueError(f"no manifest given for the {split} split")
    if Path(manifest).is_dir():
        return load_audio_folder(manifest)
    return load_manifest(manifest, text_column=data.text_column_name)


def build_processor_and_model(model_args: ModelArguments, train_texts):
    """The processor and model: loaded from `--model_name_or_path`, or new (tokenizer trained on `train_texts`,
    config from the preset or file). Global statistics are fitted later, on the checked training rows."""
    if model_args.model_name_or_path:
        processor = SpeechSeqProcessor.from_pretrained(model_args.model_name_or_path)
        model = SpeechSeqForConditionalGeneration.from_pretrained(model_args.model_name_or_path)
    else:
        if model_args.tokenizer_path or model_args.decoder_lm_path:
            tokenizer = load_tokenizer(model_args.tokenizer_path or model_args.decoder_lm_path)
        else:
            tokenizer = train_tokenizer(train_texts, kind=model_args.tokenizer_kind, vocab_size=model_args.vocab_size)
        overrides = json.loads(model_args.config_overrides) if model_args.config_overrides else {}
        overrides.update(
            spec_augment_freq_masks=model_args.spec_augment_freq_masks,
            spec_augment_freq_width=model_args.spec_augment_freq_width,
            spec_augment_time_masks=model_args.spec_augment_time_masks,
            spec_augment_time_width=model_args.spec_augment_time_width,
            vtlp_warp=model_args.vtlp_warp,
        )
        if model_args.config_file:
            config = SpeechSeqConfig.from_json_file(model_args.config_file)
            for key, value in {**overrides, **special_token_ids(tokenizer)}.items():
                setattr(config, key, value)
            config._validate()
        else:
            config = SpeechSeqConfig.from_preset(model_args.preset, **special_token_ids(tokenizer), **overrides)
        whisper = model_args.pretrained_encoder is not None
        if whisper != (config.encoder_type == "whisper"):
            raise ValueError("--pretrained_encoder and a config of encoder_type 'whisper' (--preset whisper-tiny) go "
                             f"together; got {model_args.pretrained_encoder!r} and {config.encoder_type!r}")  # fmt: skip
        if whisper and model_args.normalization not in (None, "none"):
            raise ValueError(f"--normalization {model_args.normalization}: Whisper's features stay as Whisper scales "
                             "them (leave --normalization out)")  # fmt: skip
        if whisper and model_args.decoder_lm_path:
            raise ValueError("--decoder_lm_path with --pretrained_encoder is not supported yet: start one of them")
        normalization = "none" if model_args.normalization == "global" else model_args.normalization
        extractor = SpeechSeqFeatureExtractor(normalization=normalization, min_frames=config.min_input_frames,
                                              input_mode=config.input_mode,
                                              features="whisper" if whisper else "kaldi")  # fmt: skip
        processor = SpeechSeqProcessor(extractor, tokenizer)
        if model_args.architecture == "speech2text":
            model = speech2text_baseline(config)
            model.generation_config.suppress_tokens = suppressed_token_ids(tokenizer)
            return processor, model
        if model_args.architecture != "speechseq":
            raise ValueError(f"--architecture must be 'speechseq' or 'speech2text', got {model_args.architecture!r}")
        if whisper:
            model = SpeechSeqForConditionalGeneration.from_whisper(model_args.pretrained_encoder, config)
        elif model_args.decoder_lm_path:  # frozen, if asked, by the trainer's optimizer (--freeze_decoder_steps)
            model = SpeechSeqForConditionalGeneration.from_pretrained_decoder(
                model_args.decoder_lm_path, config, freeze_decoder=False, tokenizer=tokenizer
            )
        else:
            model = SpeechSeqForConditionalGeneration(config)
    if model_args.trainable_encoder_layers is not None:  # requires_grad is not saved: set on every start and resume
        model.freeze_whisper_encoder(model_args.trainable_encoder_layers)
    mismatch = {k: (v, getattr(model.config, k, None)) for k, v in special_token_ids(processor.tokenizer).items()
                if getattr(model.config, k, None) != v}  # fmt: skip
    if mismatch:
        raise ValueError(f"tokenizer and model disagree (tokenizer, model): {mismatch}")
    if model.generation_config.suppress_tokens is None:  # new, or saved before speechseq set it
        model.generation_config.suppress_tokens = suppressed_token_ids(processor.tokenizer)
    return processor, model


def speech2text_baseline(config: SpeechSeqConfig):
    """transformers' `Speech2TextForConditionalGeneration` matched to `config`: width, layers, heads, feed-forward
    sizes, vocabulary and special tokens (its own conv1d front end, 4x, at its default 1024 channels as in the
    published s2t-small; plain cross-entropy, no CTC). Its input
    features are ours: the same Kaldi filterbanks as its own extractor's."""
    from transformers import Speech2TextConfig, Speech2TextForConditionalGeneration

    baseline = Speech2TextConfig(
        vocab_size=config.vocab_size, d_model=config.d_model, encoder_layers=config.encoder_layers,
        decoder_layers=config.decoder_layers, encoder_attention_heads=config.encoder_attention_heads,
        decoder_attention_heads=config.decoder_attention_heads, encoder_ffn_dim=config.encoder_ffn_dim,
        decoder_ffn_dim=config.decoder_ffn_dim, dropout=config.dropout, activation_function=config.activation_function,
        pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        decoder_start_token_id=config.decoder_start_token_id, input_feat_per_channel=config.num_mel_bins,
        max_target_positions=config.max_target_positions,
    )  # fmt: skip
    return Speech2TextForConditionalGeneration(baseline)


def last_complete_checkpoint(output_dir) -> str | None:
    """The newest checkpoint written to the end. transformers writes `trainer_state.json` last, and a run killed
    while saving leaves a partial checkpoint behind, which `get_last_checkpoint` would pick and resuming would fail
    on."""
    checkpoints = [p for p in Path(output_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    for path in sorted(checkpoints, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
            return str(path)
        except (OSError, ValueError):
            logger.warning("skipping %s: it was only partly written (the run stopped while saving)", path)
    return None


def end_training(trainer) -> None:
    """Wait for every process, then end the Trainer (its trackers and the process group) in all of them at once: a
    process left to exit while its peer still held gloo's connections was seen aborting (SIGABRT) after a finished
    two-process run. On the CPU the barrier is torch's own: accelerate before 1.16 passes CUDA device ids to a gloo
    barrier, which fails ("invalid device ordinal") where CPU processes outnumber the machine's GPUs."""
    if trainer.accelerator.distributed_type == DistributedType.MULTI_CPU:
        torch.distributed.barrier()
    else:
        trainer.accelerator.wait_for_everyone()
    trainer.end()


def _feature_stream(rows):
    """Arguments for `fit_global_stats`: each training row's audio or filterbank, read one at a time."""
    first = rows[0]
    if first.get("fbank"):
        return {"input_features": (read_features(row)[1] for row in rows)}
    return {"raw_speech": (read_features(row)[1] for row in rows), "sampling_rate": 16000}


def main(argv=None):
    parser = HfArgumentParser((ModelArguments, DataArguments, SpeechSeqTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(os.path.abspath(argv[0]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(argv)

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO,
                        handlers=[logging.StreamHandler(sys.stdout)])  # fmt: skip
    if training_args.should_log:  # as transformers' examples: "passive" means info on the main process
        transformers.utils.logging.set_verbosity_info()
    log_file = log_to_file(training_args.output_dir, training_args.get_process_log_level())
    logger.info("training %s; the details are logged to %s", training_args.output_dir, log_file)
    logging.getLogger("speechseq.details").info("training arguments %s", training_args)
    set_seed(training_args.seed)
    # raw audio and text columns reach the collator, which computes features and labels
    training_args = dataclasses.replace(training_args, remove_unused_columns=False, label_names=["labels"])

    last_checkpoint = None
    if training_args.do_train and os.path.isdir(training_args.output_dir):
        last_checkpoint = last_complete_checkpoint(training_args.output_dir)
        if last_checkpoint is not None and training_args.resume_from_checkpoint is None:
            logger.info("resuming from %s (delete %s to start again)", last_checkpoint, training_args.output_dir)

    train = load_split(data_args, data_args.train_split_name, data_args.train_manifest) if training_args.do_train else None
    evaluation = None
    if training_args.do_eval or training_args.eval_strategy != "no":
        evaluation = load_split(data_args, data_args.eval_split_name, data_args.eval_manifest)
    if train is not None and data_args.max_train_samples:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    if evaluation is not None and data_args.max_eval_samples:
        evaluation = evaluation.select(range(min(data_args.max_eval_samples, len(evaluation))))

    if last_checkpoint and not model_args.model_name_or_path:
        # the processor of a run is saved beside its checkpoints; reuse it rather than train a new tokenizer
        model_args = dataclasses.replace(model_args, model_name_or_path=last_checkpoint)
    processor, model = build_processor_and_model(model_args, train["text"] if train is not None else [])
    max_frames = int(data_args.max_duration_in_seconds * 100)
    with training_args.main_process_first(desc="checking the data"):
        if train is not None:
            train = prepare_dataset(train, processor, processor.feature_extractor.min_frames, max_frames,
                                    num_proc=data_args.preprocessing_num_workers)  # fmt: skip
        if evaluation is not None:
            evaluation = prepare_dataset(evaluation, processor, processor.feature_extractor.min_frames, max_frames,
                                         num_proc=data_args.preprocessing_num_workers)  # fmt: skip
    if model_args.normalization == "global" and not model_args.model_name_or_path:
        if train is None:
            raise ValueError("--normalization global fits its statistics on the training split: add --do_train")
        processor.feature_extractor.fit_global_stats(**_feature_stream(train))

    # Seq2SeqTrainer's generation defaults stop at 20 tokens: let transcripts run to the decoder's length.
    if training_args.generation_max_length is None:
        training_args = dataclasses.replace(training_args, generation_max_length=model.config.max_target_positions)
    model.generation_config.max_length = training_args.generation_max_length

    wer, cer = load_metric("wer"), load_metric("cer")

    def compute_metrics(prediction):
        ids = np.where(prediction.predictions != -100, prediction.predictions, processor.tokenizer.pad_token_id)
        labels = np.where(prediction.label_ids != -100, prediction.label_ids, processor.tokenizer.pad_token_id)
        hypotheses = [processor.normalize(t) for t in processor.batch_decode(ids, skip_special_tokens=True)]
        references = [processor.normalize(t) for t in processor.batch_decode(labels, skip_special_tokens=True)]
        return {"wer": wer.compute(predictions=hypotheses, references=references),
                "cer": cer.compute(predictions=hypotheses, references=references)}  # fmt: skip

    callbacks, frozen_steps = [], {}
    if training_args.max_train_minutes:
        callbacks.append(budget := WallClockBudget(training_args.max_train_minutes))
    if training_args.progressive_schedule:
        if not isinstance(model, SpeechSeqForConditionalGeneration):
            raise ValueError("--progressive_schedule grows speechseq models only, not --architecture speech2text")
        stages = read_stages(training_args.progressive_schedule, model.config)
        callbacks.append(ProgressiveTraining(stages))
        frozen_steps.update(progressive_frozen_steps(stages))
    if training_args.ddp_find_unused_parameters is None and leaves_parameters_unused(model, training_args):
        # DDP must be told, and the Trainer turns it off under gradient checkpointing (transformers' checkpointing
        # is non-reentrant, with which DDP can look for them)
        training_args = dataclasses.replace(training_args, ddp_find_unused_parameters=True)
    if training_args.attention_plots:
        if evaluation is None:
            raise ValueError("--attention_plots draws at evaluation: add --eval_strategy steps (or --do_eval)")
        if not isinstance(model, SpeechSeqForConditionalGeneration):
            raise ValueError("--attention_plots draws speechseq models only, not --architecture speech2text")
        if training_args.fsdp or training_args.deepspeed:  # the main process alone runs the model to draw
            raise ValueError("--attention_plots needs the whole model in each process: not with FSDP or DeepSpeed")
        layers, heads = model.config.decoder_layers, model.config.decoder_attention_heads
        if not -layers <= training_args.attention_plot_layer < layers:
            raise ValueError(f"--attention_plot_layer {training_args.attention_plot_layer} is outside the decoder's "
                             f"{layers} layers")  # fmt: skip
        if not -1 <= training_args.attention_plot_head < heads:
            raise ValueError(f"--attention_plot_head {training_args.attention_plot_head} is outside the decoder's "
                             f"{heads} heads (-1: their mean)")  # fmt: skip
        callbacks.append(AttentionPlots(processor, evaluation, training_args.attention_plot_layer,
                                        training_args.attention_plot_head))  # fmt: skip
    if training_args.freeze_decoder_steps:
        if not (model_args.decoder_lm_path or model_args.model_name_or_path):
            raise ValueError("--freeze_decoder_steps freezes a decoder copied from a language model: "
                             "add --decoder_lm_path")
        for name in model.decoder_lm_parameter_names():
            frozen_steps.setdefault(name, []).append((0, training_args.freeze_decoder_steps))
    train_collator = None
    if data_args.augmentation:
        augmentation = SpeechAugmentation(**json.loads(data_args.augmentation))
        if augmentation.join_ctc_only and not model.config.ctc_weight:
            raise ValueError("--augmentation's join_ctc_only trains joined batches through the CTC head alone, and "
                             "the model has none (ctc_weight 0)")
        train_collator = SpeechSeqDataCollator(processor, augmentation=augmentation, seed=training_args.seed)
    if training_args.schedule_by_time and not training_args.max_train_minutes:
        raise ValueError("--schedule_by_time runs the learning-rate schedule on the clock of --max_train_minutes: "
                         "add it")
    if training_args.sortagrad and not training_args.max_frames_per_batch:
        raise ValueError("--sortagrad orders the batches of --max_frames_per_batch: add it")
    if training_args.average_checkpoints:
        limit, count = training_args.save_total_limit, training_args.average_checkpoints
        if training_args.save_strategy == "no" or (limit is not None and limit < count):
            raise ValueError(f"--average_checkpoints {count} needs checkpoints: a --save_strategy and a "
                             f"--save_total_limit of at least {count} (got {training_args.save_strategy}, {limit})")
    trainer = SpeechSeqTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=SpeechSeqDataCollator(processor),
        processing_class=processor,
        compute_metrics=compute_metrics if training_args.predict_with_generate else None,
        callbacks=callbacks,
        learning_rates=json.loads(training_args.learning_rates) if training_args.learning_rates else None,
        frozen_steps=frozen_steps,
        train_data_collator=train_collator,
        data_description=describe_data(data_args, train),
    )
    if training_args.schedule_by_time and not training_args.disable_tqdm:  # --max_steps is only a cap: show minutes
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(BudgetProgressCallback(budget))
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or last_checkpoint)
        trainer.save_model()  # the model, and the processor through processing_class
        if training_args.average_checkpoints and trainer.is_world_process_zero():
            write_average(choose_checkpoints(training_args.output_dir, last=training_args.average_checkpoints),
                          training_args.output_dir)  # fmt: skip
        metrics = {**result.metrics, "train_samples": len(train)}
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
    if training_args.do_eval:
        metrics = trainer.evaluate(metric_key_prefix="eval")
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    card = {"tasks": "automatic-speech-recognition", "tags": ["speechseq", "ctc", "speech"], "language": "en"}
    if training_args.push_to_hub:  # as transformers' examples: the card goes up with the model
        trainer.push_to_hub(**card)
    elif training_args.do_train:
        trainer.create_model_card(**card)
    end_training(trainer)


if __name__ == "__main__":
    main()
