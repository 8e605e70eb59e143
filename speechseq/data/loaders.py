"""Datasets for training and evaluation, from the three places users keep speech.

Every loader returns a `datasets.Dataset` with an `id`, a `text` (empty where there is no transcript) and either
`audio` (`Audio(decode=False)`: `{"bytes", "path"}`, decoded later with soundfile, so no torchcodec or ffmpeg) or
`fbank` (the path of an `(80, T)` `.npy` filterbank). [`prepare_dataset`] then checks every row, adds its `length` in
frames, and drops what cannot be trained on; [`SpeechSeqDataCollator`] turns rows into padded batches.
"""

import csv
import io
import json
import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile
from datasets import Audio, Dataset, load_from_disk

from ..audio import load_audio
from ..feature_extraction_speechseq import HOP_LENGTH, num_frames

__all__ = [
    "load_assignment_split",
    "load_manifest",
    "load_audio_folder",
    "load_corpus",
    "from_hf_dataset",
    "prepare_dataset",
    "read_features",
]

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
TEXT_MARKERS = ("<sos>", "<eos>", "[SOS]", "[EOS]")


def load_assignment_split(root, split: str, subset: float = 1.0) -> Dataset:
    """One split of the assignment's layout: `<root>/<split>/fbank/*.npy` and, except for `test-clean`,
    `<root>/<split>/text/*.npy` (arrays of characters).

    Args:
        root: the folder holding `train-clean-100`, `dev-clean` and `test-clean`.
        split (`str`): one of those folders.
        subset (`float`): the fraction of the split to use, first files in sorted order (as the assignment).

    Raises:
        ValueError: when the split is missing, or its feature and transcript counts or names differ.
    """
    folder = Path(root) / split
    if not (folder / "fbank").is_dir():
        raise ValueError(f"{folder / 'fbank'} does not exist")
    if not 0 < subset <= 1:
        raise ValueError(f"subset must be in (0, 1], got {subset}")
    fbanks = sorted((folder / "fbank").glob("*.npy"))
    texts = sorted((folder / "text").glob("*.npy")) if (folder / "text").is_dir() else None
    if texts is not None:
        if len(texts) != len(fbanks):
            raise ValueError(f"split {split}: {len(fbanks)} feature files but {len(texts)} transcripts")
        unmatched = [(f.name, t.name) for f, t in zip(fbanks, texts) if f.stem != t.stem]
        if unmatched:
            raise ValueError(f"split {split}: feature and transcript files do not pair up, e.g. {unmatched[0]}")
    count = math.ceil(len(fbanks) * subset)
    rows = {"id": [f.stem for f in fbanks[:count]], "fbank": [str(f) for f in fbanks[:count]]}
    rows["text"] = [_characters_to_text(np.load(t)) for t in texts[:count]] if texts is not None else [""] * count
    return Dataset.from_dict(rows)


def _characters_to_text(characters: np.ndarray) -> str:
    return "".join(c for c in characters.tolist() if c not in TEXT_MARKERS).strip()


def load_manifest(path, audio_column: str = "path", text_column: str = "text") -> Dataset:
    """A jsonl, csv or tsv manifest with an audio path column and a transcript column; relative paths are taken
    from the manifest's folder.

    Raises:
        ValueError: when the file is missing, of another format, or lacks a column.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"manifest {path} does not exist")
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    elif path.suffix in (".csv", ".tsv"):
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
    else:
        raise ValueError(f"manifest {path}: expected .jsonl, .csv or .tsv")
    for column in (audio_column, text_column):
        if rows and column not in rows[0]:
            raise ValueError(f"manifest {path} has no column {column!r} (it has {sorted(rows[0])})")
    audio = [{"bytes": None, "path": str((path.parent / row[audio_column]).resolve())} for row in rows]
    dataset = Dataset.from_dict({
        "id": [Path(row[audio_column]).stem for row in rows],
        "audio": audio,
        "text": [row[text_column] or "" for row in rows],
    })  # fmt: skip
    return dataset.cast_column("audio", Audio(decode=False))


def load_audio_folder(directory) -> Dataset:
    """A folder of audio files with transcripts: a `metadata.{jsonl,csv,tsv}` manifest (columns `file_name` and
    `transcription` or `text`, as `datasets`' audiofolder), or else a `<name>.txt` beside each `<name>.wav|flac|...`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"audio folder {directory} does not exist")
    for suffix in (".jsonl", ".csv", ".tsv"):
        manifest = directory / f"metadata{suffix}"
        if manifest.exists():
            with manifest.open() as f:
                first = f.readline()
            text_column = "transcription" if "transcription" in first else "text"
            return load_manifest(manifest, audio_column="file_name", text_column=text_column)
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    texts = [p.with_suffix(".txt").read_text().strip() if p.with_suffix(".txt").exists() else "" for p in files]
    dataset = Dataset.from_dict({
        "id": [p.stem for p in files], "audio": [{"bytes": None, "path": str(p)} for p in files], "text": texts,
    })  # fmt: skip
    return dataset.cast_column("audio", Audio(decode=False))


def load_corpus(directory):
    """The `DatasetDict` that `build_corpus` saved in `directory` (or its `dataset/` folder)."""
    directory = Path(directory)
    return load_from_disk(str(directory / "dataset" if (directory / "dataset").is_dir() else directory))


def from_hf_dataset(dataset: Dataset, audio_column: str = "audio", text_column: str = "text") -> Dataset:
    """A `datasets` dataset with an audio column (LibriSpeech through `load_dataset`, say), set to decode with
    soundfile instead of torchcodec."""
    missing = {audio_column, text_column} - set(dataset.column_names)
    if missing:
        raise ValueError(f"the dataset has no column {sorted(missing)} (it has {dataset.column_names})")
    if audio_column != "audio":
        dataset = dataset.rename_column(audio_column, "audio")
    if text_column != "text":
        dataset = dataset.rename_column(text_column, "text")
    if "id" not in dataset.column_names:
        dataset = dataset.add_column("id", [str(i) for i in range(len(dataset))])
    return dataset.cast_column("audio", Audio(decode=False))


def read_features(row: dict, sampling_rate: int = 16000):
    """A row's input as the feature extractor takes it: `("audio", waveform)` or `("fbank", (80, T) array)`."""
    if "fbank" in row and row["fbank"] is not None:
        return "fbank", np.load(row["fbank"])
    audio = row["audio"]
    return "audio", load_audio(audio["bytes"] if audio.get("bytes") else audio["path"], sampling_rate)


def _frames(row: dict, features: str = "kaldi") -> int:
    """Filterbank frames of a row, from the file header: nothing is decoded. `features`: the extractor's kind
    (Whisper's log-mels have a frame a hop, two more than Kaldi's)."""
    if "fbank" in row and row["fbank"] is not None:
        return int(np.load(row["fbank"], mmap_mode="r").shape[1])
    audio = row["audio"]
    info = soundfile.info(io.BytesIO(audio["bytes"]) if audio.get("bytes") else audio["path"])
    return num_frames(int(info.frames * 16000 / info.samplerate), features)


def prepare_dataset(dataset: Dataset, processor, min_frames: int, max_frames: int, require_text: bool = True,
                    num_proc: int | None = None) -> Dataset:  # fmt: skip
    """Check every row, add its `length` in frames, and drop (with one warning that counts each reason) rows
    whose audio is missing or unreadable, whose transcript is empty or has characters outside the tokenizer's
    vocabulary, or that are shorter than `min_frames` or longer than `max_frames`.

    Args:
        processor ([`SpeechSeqProcessor`]): normalises and tokenizes the transcripts.
        min_frames (`int`): the model's `config.min_input_frames`.
        max_frames (`int`): the longest input to keep, in 10 ms frames.
        require_text (`bool`): drop rows without a transcript (off for test sets without text).
    """
    unk = processor.tokenizer.unk_token_id
    features = getattr(processor.feature_extractor, "features", "kaldi")

    def check(row):
        try:
            length = _frames(row, features)
        except (OSError, RuntimeError, ValueError, soundfile.LibsndfileError):
            return {"length": 0, "problem": "missing or unreadable file"}
        text = processor.normalize(row["text"] or "").strip()
        if require_text and not text:
            return {"length": length, "problem": "empty transcript"}
        if text and unk in processor.tokenizer(text).input_ids:
            return {"length": length, "problem": "characters outside the vocabulary"}
        if length < min_frames:
            return {"length": length, "problem": f"shorter than {min_frames} frames"}
        if length > max_frames:
            return {"length": length, "problem": f"longer than {max_frames * HOP_LENGTH / 16000:.0f} s"}
        return {"length": length, "problem": ""}

    checked = dataset.map(check, num_proc=num_proc, desc="checking")
    problems = Counter(p for p in checked["problem"] if p)
    if problems:
        logger.warning("skipped %d of %d utterances: %s", sum(problems.values()), len(checked),
                       ", ".join(f"{n} {reason}" for reason, n in problems.most_common()))  # fmt: skip
    return checked.filter(lambda problem: not problem, input_columns="problem").remove_columns("problem")
