#!/usr/bin/env python
"""Train the speechseq language model (`SpeechSeqForCausalLM`) for shallow fusion, with `Trainer`.

The text is the corpus builder's (Debian's fortunes and WordNet examples; the KJV with `--bible`) or your own files
(one sentence per line), normalised and tokenised with the ASR model's tokenizer, each sentence as
`[SOS] tokens [EOS]`. With `--corpus_dir`, the sentences of that ASR corpus's dev and test splits are kept out of
training and are where perplexity is measured; otherwise a random `--held_out_sentences` are.

    python examples/run_lm.py --tokenizer_name_or_path demo/model --corpus_dir demo/corpus --output_dir demo/lm \\
        --preset small --max_steps 2000 --per_device_train_batch_size 64 --learning_rate 2e-3

Writes the model (it loads with `AutoModelForCausalLM`, and as `generate(lm=<output_dir>)`), its tokenizer, and
`lm_results.json` with the held-out perplexity per token and per character.
"""

import json
import logging
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

from speechseq import SpeechSeqForCausalLM, SpeechSeqLMConfig, load_tokenizer, normalize_text, special_token_ids
from speechseq.data import load_corpus
from speechseq.data.text_sources import corpus_sentences
from speechseq.training import end_training, last_complete_checkpoint, log_to_file

logger = logging.getLogger("speechseq.run_lm")

HELD_OUT_SPLITS = ("dev", "test_seen", "test_unseen")


@dataclass
class LMArguments:
    tokenizer_name_or_path: str = field(
        metadata={"help": "The ASR model's directory (or a tokenizer directory / JSON file): the LM shares its tokens."}
    )
    preset: str = field(default="small", metadata={"help": "SpeechSeqLMConfig preset: 'tiny' or 'small'."})
    config_overrides: str | None = field(default=None, metadata={"help": 'JSON of config fields, e.g. \'{"decoder_layers": 4}\'.'})
    text_files: list[str] | None = field(default=None, metadata={"help": "Text files, one sentence per line."})
    bible: bool = field(default=False, metadata={"help": "Add the King James verses to the Debian text."})
    corpus_dir: str | None = field(default=None, metadata={"help": "An ASR corpus whose dev/test sentences are held out."})
    held_out_sentences: int = field(default=1000, metadata={"help": "Held-out sentences when there is no corpus."})
    max_train_sentences: int | None = field(default=None, metadata={"help": "Keep the first N training sentences."})


@dataclass
class LMDataCollator:
    """Pads `[SOS] tokens [EOS]` rows; labels are the inputs with -100 on padding (the model shifts them)."""

    pad_token_id: int

    def __call__(self, rows):
        width = max(len(row["input_ids"]) for row in rows)
        ids = torch.full((len(rows), width), self.pad_token_id)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row["input_ids"])] = torch.tensor(row["input_ids"])
            mask[i, : len(row["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def split_sentences(args: LMArguments, seed: int) -> tuple[list[str], list[str]]:
    """(training, held-out) sentences, normalised and disjoint."""
    if args.text_files:
        lines = (line for path in args.text_files for line in Path(path).read_text(encoding="utf-8").splitlines())
        sentences = list(dict.fromkeys(filter(None, map(normalize_text, lines))))
    else:
        sentences = corpus_sentences(args.bible)
    if args.corpus_dir:
        corpus = load_corpus(args.corpus_dir)
        held_out = list(dict.fromkeys(t for split in HELD_OUT_SPLITS if split in corpus for t in corpus[split]["text"]))
    else:
        held_out = random.Random(seed).sample(sentences, min(args.held_out_sentences, len(sentences) // 10))
    excluded = set(held_out)
    train = [s for s in sentences if s not in excluded][: args.max_train_sentences]
    if not train or not held_out:
        raise ValueError(f"no text to train on ({len(train)} sentences) or to measure ({len(held_out)} held out)")
    return train, held_out


@torch.no_grad()
def perplexity(model, rows, collator, batch_size: int = 64) -> tuple[float, int]:
    """Total negative log-likelihood (nats) of every token after `[SOS]`, and the number of those tokens."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = collator(rows[start : start + batch_size])
        batch = {k: v.to(model.device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="sum")
        total, count = total + nll.item(), count + int((labels != -100).sum())
    return total, count


def main(argv=None) -> dict:
    parser = HfArgumentParser((LMArguments, TrainingArguments))
    args, training_args = parser.parse_args_into_dataclasses(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    log_to_file(training_args.output_dir, training_args.get_process_log_level())  # transformers' details
    set_seed(training_args.seed)

    tokenizer = load_tokenizer(args.tokenizer_name_or_path)
    ids = special_token_ids(tokenizer)
    train_text, held_out_text = split_sentences(args, training_args.seed)
    logger.info("%d training sentences, %d held out", len(train_text), len(held_out_text))

    def encode(sentences):
        encoded = tokenizer(sentences)["input_ids"]  # each ends in [EOS]
        return [{"input_ids": [ids["bos_token_id"], *row]} for row in encoded]

    train = Dataset.from_list(encode(train_text))
    train = train.add_column("length", [len(row) for row in train["input_ids"]])
    held_out = encode(held_out_text)
    collator = LMDataCollator(ids["pad_token_id"])

    overrides = json.loads(args.config_overrides) if args.config_overrides else {}
    config = SpeechSeqLMConfig.from_preset(
        args.preset, vocab_size=ids["vocab_size"], pad_token_id=ids["pad_token_id"], bos_token_id=ids["bos_token_id"],
        eos_token_id=ids["eos_token_id"], **overrides,
    )  # fmt: skip
    model = SpeechSeqForCausalLM(config)
    trainer = Trainer(model=model, args=training_args, train_dataset=train, data_collator=collator,
                      processing_class=tokenizer)  # fmt: skip
    resume = training_args.resume_from_checkpoint or last_complete_checkpoint(training_args.output_dir)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()  # the model and, through processing_class, the tokenizer

    nll, tokens = perplexity(model, held_out, collator)
    characters = sum(len(s) for s in held_out_text) + len(held_out_text)  # each sentence's characters and its end
    results = {
        "perplexity_per_token": math.exp(nll / tokens),
        "perplexity_per_character": math.exp(nll / characters),
        "held_out_sentences": len(held_out_text),
        "train_sentences": len(train_text),
        "num_parameters": model.num_parameters(),
    }
    logger.info("held-out perplexity: %.3f per token, %.3f per character", results["perplexity_per_token"],
                results["perplexity_per_character"])  # fmt: skip
    (Path(training_args.output_dir) / "lm_results.json").write_text(json.dumps(results, indent=2) + "\n")
    end_training(trainer)
    return results


if __name__ == "__main__":
    main()
