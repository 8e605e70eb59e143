"""What a model's greedy CTC gets wrong: its CER split into substituted, deleted and inserted characters, per split,
and what a blank penalty does to them.

    python bench/ctc_errors.py --model_dir demo/model --corpus_dir demo/corpus --splits train dev --utterances 200 \
        --blank_penalties 0 0.5 1 2

A blank penalty is subtracted from the blank's log-probability before the best path is read: a model that deletes
characters because blank wins by a little reads more of them with one, and inserts more. The training split is read
clean (no augmentation), its utterances spread evenly over it; the others from their start.
"""

import argparse
import logging

import jiwer
import torch

from common import write_results
from speechseq import SpeechSeqForConditionalGeneration, SpeechSeqProcessor, normalize_text
from speechseq.data import load_corpus
from speechseq.data.collator import SpeechSeqDataCollator

logger = logging.getLogger("bench.ctc_errors")


@torch.no_grad()
def ctc_log_probs(model, processor, rows) -> list[torch.Tensor]:
    """Each utterance's CTC log-probabilities over its real frames, `(frames, vocab)`."""
    collate, out = SpeechSeqDataCollator(processor), []
    for start in range(0, len(rows), 16):
        batch = collate([rows[i] for i in range(start, min(start + 16, len(rows)))])
        encoded, lengths = model.encode(batch["input_features"], batch["attention_mask"])
        log_probs = model.ctc_log_probs(encoded)
        out += [row[:n] for row, n in zip(log_probs, lengths.tolist())]
    return out


def best_paths(model, processor, log_probs: list[torch.Tensor], blank_penalty: float) -> list[str]:
    c = model.config
    never = [c.pad_token_id, c.decoder_start_token_id, c.eos_token_id]
    transcripts = []
    for scores in log_probs:
        scores = scores.clone()
        scores[:, c.blank_token_id] -= blank_penalty
        scores[:, never] = -torch.inf
        path = torch.unique_consecutive(scores.argmax(-1)).tolist()  # repeats merged, then blanks dropped
        transcripts.append(processor.decode([t for t in path if t != c.blank_token_id], skip_special_tokens=True))
    return transcripts


def error_kinds(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """CER and its parts, as fractions of the reference characters; WER."""
    out = jiwer.process_characters(references, hypotheses)
    characters = sum(len(r) for r in references)
    return {"cer": out.cer, "substituted": out.substitutions / characters, "deleted": out.deletions / characters,
            "inserted": out.insertions / characters, "wer": jiwer.wer(references, hypotheses)}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--corpus_dir", required=True)
    parser.add_argument("--splits", nargs="+", default=["train", "dev"])
    parser.add_argument("--utterances", type=int, default=200, help="per split")
    parser.add_argument("--blank_penalties", type=float, nargs="+", default=[0.0])
    parser.add_argument("--output", help="JSON of the figures (default bench/results/ctc_errors.json)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = SpeechSeqForConditionalGeneration.from_pretrained(args.model_dir).eval()
    processor = SpeechSeqProcessor.from_pretrained(args.model_dir)
    corpus = load_corpus(args.corpus_dir)
    results = []
    logger.info("%-12s %7s %7s %7s %7s %7s %7s", "split", "penalty", "CER", "subst", "deleted", "inserted", "WER")
    for split in args.splits:
        rows = corpus[split]
        step = max(1, len(rows) // args.utterances) if split == "train" else 1
        rows = rows.select(range(0, min(len(rows), step * args.utterances), step))
        references = [normalize_text(text) for text in rows["text"]]
        log_probs = ctc_log_probs(model, processor, rows)
        for penalty in args.blank_penalties:
            figures = error_kinds(references, best_paths(model, processor, log_probs, penalty))
            results.append({"split": split, "utterances": len(rows), "blank_penalty": penalty, **figures})
            logger.info("%-12s %7.1f %6.1f%% %6.1f%% %6.1f%% %7.1f%% %6.1f%%", split, penalty,
                        *(100 * figures[k] for k in ("cer", "substituted", "deleted", "inserted", "wer")))  # fmt: skip
    write_results("ctc_errors", {"model_dir": args.model_dir, "results": results}, args.output)


if __name__ == "__main__":
    main()
