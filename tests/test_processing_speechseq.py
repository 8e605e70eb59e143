import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from speechseq import SpeechSeqFeatureExtractor, SpeechSeqProcessor, normalize_text

from conftest import TRANSCRIPTS


def test_processor_gives_features_masks_and_padded_labels(processor, signals):
    texts = ["Hello, World!", "Good bye."]
    out = processor(audio=[signals[0], signals[1][:9000]], sampling_rate=16000, text=texts, return_tensors="pt")
    assert out["input_features"].shape == (2, 98, 80)
    assert out["attention_mask"].sum(-1).tolist() == [98, 54]
    labels = out["labels"]
    assert labels.shape == (2, len("hello world") + 1)
    assert (labels[1, len("good bye") + 1 :] == -100).all()
    for row, text in zip(labels, texts):
        ids = row[row != -100].tolist()
        assert ids[-1] == processor.tokenizer.eos_token_id
        assert processor.decode(ids, skip_special_tokens=True) == normalize_text(text)
    unpadded = processor(audio=signals, sampling_rate=16000, text=texts)
    assert [len(ids) for ids in unpadded["labels"]] == [12, 9]


def test_text_alone_and_precomputed_filterbanks(processor, signals):
    assert processor(text="Hi")["input_ids"] == processor.tokenizer("hi")["input_ids"]
    fbank = SpeechSeqFeatureExtractor(normalization="none")(signals[0], sampling_rate=16000)["input_features"][0].T
    from_fbank = processor(input_features=[fbank], text=["hello world"], return_tensors="pt")
    from_audio = processor(audio=[signals[0]], sampling_rate=16000, text=["hello world"], return_tensors="pt")
    torch.testing.assert_close(from_fbank["input_features"], from_audio["input_features"], atol=1e-5, rtol=0)
    assert torch.equal(from_fbank["labels"], from_audio["labels"])


def test_processor_save_load_as_one_directory(processor, signals, tmp_path):
    SpeechSeqProcessor(SpeechSeqFeatureExtractor(normalization="none"), processor.tokenizer).save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, SpeechSeqProcessor)
    assert loaded.feature_extractor.normalization == "none"
    assert loaded.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    raw = loaded(audio=signals, sampling_rate=16000, text=TRANSCRIPTS, return_tensors="np")
    expected = SpeechSeqFeatureExtractor(normalization="none")(signals, sampling_rate=16000, return_tensors="np")
    np.testing.assert_allclose(raw["input_features"], expected["input_features"])


def test_text_normalization_none_keeps_text_as_given(processor):
    keep = SpeechSeqProcessor(processor.feature_extractor, processor.tokenizer, text_normalization="none")
    assert keep.normalize("Hello!") == "Hello!"
    assert keep(text="Hello")["input_ids"][0] == processor.tokenizer.unk_token_id  # no "H" in the vocabulary
    with pytest.raises(ValueError, match="text_normalization"):
        SpeechSeqProcessor(processor.feature_extractor, processor.tokenizer, text_normalization="lower")


def test_mismatched_counts_and_empty_calls_raise(processor, signals):
    with pytest.raises(ValueError, match="got 2 utterances but 1 transcripts"):
        processor(audio=signals, sampling_rate=16000, text=["one"])
    with pytest.raises(ValueError, match="give audio"):
        processor()
