"""Transcribe a prepared dataset and score it: what the demo, the decoding benchmark and the weight tuner share."""

import time

import jiwer
import torch
from tqdm.auto import tqdm

from .data.collator import SpeechSeqDataCollator

__all__ = ["transcribe", "error_rates"]


@torch.no_grad()
def transcribe(model, processor, dataset, batch_size: int = 16, progress: bool | str = False, generate=None,
               **generate_kwargs):  # fmt: skip
    """Transcripts of every row of `dataset` (rows as the loaders give them: audio or filterbank) and the seconds
    spent in `generate` (`model.generate` unless another callable is given), batch by batch (features are computed
    outside the timing). `progress` shows a progress bar (a string: with that label).

    Returns:
        `(list[str], float)`: the decoded transcripts in row order, and the decoding time.
    """
    collate = SpeechSeqDataCollator(processor)
    generate = generate or model.generate
    hypotheses, seconds = [], 0.0
    starts = range(0, len(dataset), batch_size)
    for start in tqdm(starts, desc=progress if isinstance(progress, str) else "decoding", unit="batch",
                      disable=not progress):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        inputs = {"input_features": batch["input_features"], "attention_mask": batch["attention_mask"]}
        began = time.perf_counter()
        ids = generate(**{k: v.to(model.device) for k, v in inputs.items()}, **generate_kwargs)
        seconds += time.perf_counter() - began
        hypotheses += processor.batch_decode(ids, skip_special_tokens=True)
    return hypotheses, seconds


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Corpus-level character and word error rates (jiwer), as fractions."""
    references, hypotheses = list(references), list(hypotheses)
    return {"cer": jiwer.cer(references, hypotheses), "wer": jiwer.wer(references, hypotheses)}
