"""Speech data for training: a TTS-built corpus, loaders for the three places users keep speech, a collator."""

from .collator import SpeechSeqDataCollator
from .corpus import build_corpus
from .loaders import (
    from_hf_dataset,
    load_assignment_split,
    load_audio_folder,
    load_corpus,
    load_manifest,
    prepare_dataset,
)

__all__ = [
    "SpeechSeqDataCollator",
    "build_corpus",
    "from_hf_dataset",
    "load_assignment_split",
    "load_audio_folder",
    "load_corpus",
    "load_manifest",
    "prepare_dataset",
]
