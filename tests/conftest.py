"""Shared fixtures: a char tokenizer, tiny models, band-limited test signals and a tiny model trained on them."""

import io

import numpy as np
import pytest
import soundfile
import torch
from datasets import Dataset

from speechseq import (
    SpeechSeqConfig,
    SpeechSeqFeatureExtractor,
    SpeechSeqForConditionalGeneration,
    SpeechSeqProcessor,
    special_token_ids,
    train_tokenizer,
)

TRANSCRIPTS = ["hello world", "good bye"]

# the marks of transformers' common tests (test_transformers_conformance.py), under --strict-markers
TRANSFORMERS_MARKS = ("accelerate_tests", "flash_attn_test", "flash_attn_3_test", "flash_attn_4_test",
                      "torch_compile_test", "torch_export_test", "slow", "order", "is_training_test",
                      "is_pipeline_test", "is_staging_test", "is_agent_test", "is_fsdp_test",
                      "is_tensor_parallel_test", "is_expert_parallel_test")  # fmt: skip


def pytest_configure(config):
    for mark in TRANSFORMERS_MARKS:
        config.addinivalue_line("markers", f"{mark}: a mark of transformers' common tests")


def tone_signal(freqs, seconds=1.0, sampling_rate=16000):
    """Amplitude-modulated tones, all below 4 kHz so that 8 kHz audio carries the same content."""
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    x = sum(np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * (k + 1) * 1.5 * t)) for k, f in enumerate(freqs))
    return (0.1 * x / len(freqs)).astype(np.float32)


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer(TRANSCRIPTS + ["the quick brown fox jumps over the lazy dog's back"], kind="char")


@pytest.fixture(scope="session")
def processor(tokenizer):
    return SpeechSeqProcessor(SpeechSeqFeatureExtractor(), tokenizer)


def tiny_model(tokenizer, seed=0, **overrides):
    torch.manual_seed(seed)
    config = SpeechSeqConfig.from_preset("tiny", **special_token_ids(tokenizer), **overrides)
    return SpeechSeqForConditionalGeneration(config).eval()


@pytest.fixture(scope="session")
def signals():
    """Two distinct 1-second test signals, one per entry of TRANSCRIPTS, over a noise floor well above 16-bit
    quantisation (so a FLAC copy carries the same features)."""
    noise = np.random.default_rng(0).standard_normal((2, 16000)).astype(np.float32) * 2e-3
    return [tone_signal([300, 900, 1700]) + noise[0], tone_signal([500, 1200, 2600, 3100]) + noise[1]]


def signals_dataset(signals, texts=TRANSCRIPTS) -> Dataset:
    """The test signals as the loaders give audio rows: FLAC bytes and their transcripts."""
    flac = []
    for signal in signals:
        soundfile.write(buffer := io.BytesIO(), signal, 16000, format="FLAC")
        flac.append({"bytes": buffer.getvalue(), "path": None})
    return Dataset.from_dict({"audio": flac, "text": list(texts)})


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory, tokenizer, processor, signals):
    """A tiny model overfit to map each test signal to its transcript, saved with its processor."""
    model = tiny_model(tokenizer).train()
    batch = processor(audio=signals, sampling_rate=16000, text=TRANSCRIPTS, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    generated = model.generate(batch["input_features"], attention_mask=batch["attention_mask"])
    assert processor.batch_decode(generated, skip_special_tokens=True) == TRANSCRIPTS, "the fixture did not train"
    path = tmp_path_factory.mktemp("trained")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture
def assignment_root(tmp_path, signals):
    """The assignment's layout for two utterances per split; test-clean without text."""
    extractor = SpeechSeqFeatureExtractor(normalization="none")
    for split in ("train-clean-100", "dev-clean", "test-clean"):
        (tmp_path / split / "fbank").mkdir(parents=True)
        for i, (signal, text) in enumerate(zip(signals, TRANSCRIPTS)):
            features = extractor(signal, sampling_rate=16000, padding=False)["input_features"][0].T
            np.save(tmp_path / split / "fbank" / f"{i:04d}.npy", features)
            if split != "test-clean":
                (tmp_path / split / "text").mkdir(exist_ok=True)
                np.save(tmp_path / split / "text" / f"{i:04d}.npy", np.array(["<sos>", *text.upper(), "<eos>"]))
    return tmp_path
