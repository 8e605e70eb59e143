"""Batches by frames rather than by count: a batch sampler for `speechseq-train --max_frames_per_batch`."""

import numpy as np
from torch.utils.data import Sampler

__all__ = ["FrameBudgetBatchSampler"]


class FrameBudgetBatchSampler(Sampler[list[int]]):
    """Batches whose padded size (the longest utterance's frames times the utterance count) stays within
    `max_frames`, as ESPnet's `batch_bins`, fairseq's `max_tokens` and lhotse's `max_duration` make them: short
    utterances come many to a batch, long ones few, so every step costs about the same and little is padding.

    The utterances, sorted by length, are cut greedily into batches once; each epoch shuffles the batches' order
    (seeded by `seed` and the epoch, so a resumed run sees the same order). With `sortagrad`, the first epoch goes
    shortest batch first (SortaGrad, Amodei et al. 2016, "Deep Speech 2"): short utterances are the easy start
    that CTC's alignment learns from.

    Args:
        lengths (sequence of `int`): each utterance's frames (the prepared dataset's `length` column).
        max_frames (`int`): the most padded frames in a batch.
        seed (`int`): seeds each epoch's order.
        sortagrad (`bool`): shortest first in the first epoch.

    Raises:
        ValueError: when an utterance alone is longer than `max_frames`, or `lengths` is empty.
    """

    def __init__(self, lengths, max_frames: int, seed: int = 0, sortagrad: bool = False):
        lengths = np.asarray(lengths, dtype=np.int64)
        if len(lengths) == 0:
            raise ValueError("no utterances to batch")
        if max_frames <= 0:
            raise ValueError(f"max_frames must be positive, got {max_frames}")
        longest = int(lengths.max())
        if longest > max_frames:
            raise ValueError(f"utterance {int(lengths.argmax())} has {longest} frames, more than max_frames "
                             f"{max_frames}: raise the budget or drop long utterances (--max_duration_in_seconds "
                             f"{max_frames / 100:g})")  # fmt: skip
        self.max_frames, self.seed, self.sortagrad, self.epoch = max_frames, seed, sortagrad, 0
        self.batches = []  # shortest first
        batch = []
        for index in np.argsort(lengths, kind="stable"):
            # sorted ascending, so the newest utterance is the batch's longest
            if batch and (len(batch) + 1) * lengths[index] > max_frames:
                self.batches.append(batch)
                batch = []
            batch.append(int(index))
        self.batches.append(batch)

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer (through Accelerate) before each epoch."""
        self.epoch = epoch

    def __iter__(self):
        if self.sortagrad and self.epoch == 0:
            order = range(len(self.batches))
        else:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.batches))
        for i in order:
            yield list(self.batches[i])

    def __len__(self) -> int:
        return len(self.batches)
