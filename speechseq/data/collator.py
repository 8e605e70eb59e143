"""Batches for the Trainer: rows of a prepared dataset in, padded features, frame masks and labels out."""

from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import BatchFeature

from .augmentation import SpeechAugmentation
from .loaders import read_features

__all__ = ["SpeechSeqDataCollator"]


@dataclass
class SpeechSeqDataCollator:
    """Decodes each row's audio (or loads its filterbank) and runs the processor over the whole batch.

    Features are computed here, on the fly, rather than stored: the extractor runs at thousands of audio-seconds
    per CPU-second, and SpecAugment (in the model, while training) sees fresh features each epoch.

    With `augmentation` (the training collator only: `SpeechSeqTrainer(train_data_collator=...)`), each waveform is
    augmented first (and a labelled batch's may be joined in pairs), from a generator seeded by `seed`, the
    dataloader worker and the batch's number in that worker, so that a seed gives the same batches again.

    Returns a [`BatchFeature`] of `input_features` (B, T, 80), `attention_mask` (B, T) and, when every row has a
    transcript, `labels` (B, L) padded with -100; with `SpeechAugmentation(join_ctc_only=True)`, a joined batch
    also has `ctc_only=True`, which `SpeechSeqTrainer` takes out before the forward pass.
    """

    processor: object
    sampling_rate: int = 16000
    augmentation: SpeechAugmentation | None = None
    seed: int = 0
    _batches: int = field(default=0, init=False, repr=False)  # batches made by this copy (one per worker)

    def __call__(self, rows: list[dict]) -> BatchFeature:
        inputs = [read_features(row, self.sampling_rate) for row in rows]
        kinds = {kind for kind, _ in inputs}
        if len(kinds) > 1:
            raise ValueError("a batch mixes audio and filterbank rows; keep one kind of input per dataset")
        texts = [row.get("text") or "" for row in rows]
        arrays = [x for _, x in inputs]
        joined = False
        if self.augmentation is not None:
            if "fbank" in kinds:
                raise ValueError("waveform augmentation needs audio rows, not precomputed filterbanks")
            worker = torch.utils.data.get_worker_info()
            rng = np.random.default_rng([self.seed, worker.id if worker else 0, self._batches])
            if all(texts):  # pairs are joined with their transcripts, so only in labelled batches
                arrays, texts = self.augmentation.join(arrays, texts, rng)
                joined = len(arrays) < len(rows)
            arrays = [self.augmentation(x, rng) for x in self.augmentation.pause(arrays, rng)]
        self._batches += 1
        key = {"audio": "audio", "fbank": "input_features"}[kinds.pop()]
        batch = self.processor(
            **{key: arrays},
            sampling_rate=self.sampling_rate if key == "audio" else None,
            text=texts if all(texts) else None,
            return_tensors="pt",
        )
        if joined and self.augmentation.join_ctc_only:
            batch["ctc_only"] = True
        return batch
