"""Loaders for the assignment's layout, manifests, audio folders and `datasets` audio; data checks; the collator;
SpecAugment."""

import json
import logging

import numpy as np
import pytest
import soundfile
import torch
from datasets import Audio, Dataset

from speechseq import SpeechSeqFeatureExtractor, SpeechSeqProcessor
from speechseq.data import (
    SpeechSeqDataCollator,
    from_hf_dataset,
    load_assignment_split,
    load_audio_folder,
    load_manifest,
    prepare_dataset,
)
from speechseq.data.sampler import FrameBudgetBatchSampler
from speechseq.modeling_speechseq import _mel_centres, spec_augment, vtlp

from conftest import TRANSCRIPTS, tiny_model


def test_assignment_layout_with_and_without_text(assignment_root):
    train = load_assignment_split(assignment_root, "train-clean-100")
    assert train["id"] == ["0000", "0001"]
    assert train["text"] == [t.upper() for t in TRANSCRIPTS]  # markers dropped
    assert np.load(train[0]["fbank"]).shape == (80, 98)
    test = load_assignment_split(assignment_root, "test-clean")
    assert test["text"] == ["", ""]
    assert len(load_assignment_split(assignment_root, "dev-clean", subset=0.5)) == 1


def test_assignment_count_mismatch_raises(assignment_root):
    (assignment_root / "dev-clean" / "text" / "0001.npy").unlink()
    with pytest.raises(ValueError, match="split dev-clean: 2 feature files but 1 transcripts"):
        load_assignment_split(assignment_root, "dev-clean")
    with pytest.raises(ValueError, match="does not exist"):
        load_assignment_split(assignment_root, "train-other-500")


@pytest.fixture
def audio_files(tmp_path, signals):
    for i, signal in enumerate(signals):
        soundfile.write(tmp_path / f"utt{i}.flac", signal, 16000)
    return tmp_path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv"])
def test_manifests(audio_files, fmt):
    rows = [{"path": f"utt{i}.flac", "text": t} for i, t in enumerate(TRANSCRIPTS)]
    path = audio_files / f"manifest.{fmt}"
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows))
    else:
        sep = "," if fmt == "csv" else "\t"
        path.write_text("path" + sep + "text\n" + "".join(f"{r['path']}{sep}{r['text']}\n" for r in rows))
    dataset = load_manifest(path)
    assert dataset["text"] == TRANSCRIPTS and dataset["id"] == ["utt0", "utt1"]
    assert dataset[0]["audio"]["path"] == str(audio_files / "utt0.flac")
    with pytest.raises(ValueError, match="has no column 'transcript'"):
        load_manifest(path, text_column="transcript")


def test_audio_folders(audio_files):
    for i, text in enumerate(TRANSCRIPTS):
        (audio_files / f"utt{i}.txt").write_text(text + "\n")
    assert load_audio_folder(audio_files)["text"] == TRANSCRIPTS
    (audio_files / "metadata.csv").write_text("file_name,transcription\nutt1.flac,second\nutt0.flac,first\n")
    folder = load_audio_folder(audio_files)
    assert folder["id"] == ["utt1", "utt0"] and folder["text"] == ["second", "first"]


def test_hf_audio_column_decodes_without_torchcodec(audio_files, processor):
    dataset = Dataset.from_dict({"file": [str(audio_files / "utt0.flac"), str(audio_files / "utt1.flac")],
                                 "sentence": TRANSCRIPTS}).cast_column("file", Audio())  # fmt: skip
    dataset = from_hf_dataset(dataset, audio_column="file", text_column="sentence")
    batch = SpeechSeqDataCollator(processor)([dataset[0], dataset[1]])
    audio = [soundfile.read(audio_files / f"utt{i}.flac", dtype="float32")[0] for i in range(2)]
    expected = processor(audio=audio, sampling_rate=16000, text=TRANSCRIPTS, return_tensors="pt")
    torch.testing.assert_close(batch["input_features"], expected["input_features"])
    assert torch.equal(batch["labels"], expected["labels"])


def test_collator_pads_features_and_labels_for_both_kinds(assignment_root, audio_files, processor):
    fbank_rows = list(load_assignment_split(assignment_root, "dev-clean"))
    batch = SpeechSeqDataCollator(processor)(fbank_rows)
    assert batch["input_features"].shape == (2, 98, 80) and batch["attention_mask"].shape == (2, 98)
    assert batch["labels"].shape == (2, len(TRANSCRIPTS[0]) + 1)
    assert (batch["labels"][1, len(TRANSCRIPTS[1]) + 1 :] == -100).all()
    unlabelled = SpeechSeqDataCollator(processor)(list(load_assignment_split(assignment_root, "test-clean")))
    assert "labels" not in unlabelled


def test_prepare_dataset_counts_every_bad_row_in_one_warning(audio_files, processor, signals, caplog):
    soundfile.write(audio_files / "long.flac", np.concatenate([signals[0]] * 3), 16000)
    soundfile.write(audio_files / "short.flac", signals[0][:1000], 16000)
    (audio_files / "corrupt.flac").write_bytes(b"not audio at all")
    rows = [
        ("utt0.flac", "hello world"),  # kept
        ("utt1.flac", "good bye"),  # kept
        ("missing.flac", "hello"),
        ("corrupt.flac", "hello"),
        ("utt0.flac", "   "),  # empty transcript
        ("utt0.flac", "HELLO"),  # upper case is outside the vocabulary, with text_normalization="none"
        ("long.flac", "hello"),
        ("short.flac", "hello"),
    ]
    path = audio_files / "manifest.jsonl"
    path.write_text("\n".join(json.dumps({"path": p, "text": t}) for p, t in rows))
    with caplog.at_level(logging.WARNING):
        as_given = SpeechSeqProcessor(processor.feature_extractor, processor.tokenizer, text_normalization="none")
        prepared = prepare_dataset(load_manifest(path), as_given, min_frames=7, max_frames=200)
    assert prepared["text"] == TRANSCRIPTS and prepared["length"] == [98, 98]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "skipped" in r.message]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "skipped 6 of 8 utterances" in message
    for reason in ("2 missing or unreadable file", "1 empty transcript", "1 characters outside the vocabulary",
                   "1 longer than 2 s", "1 shorter than 7 frames"):  # fmt: skip
        assert reason in message


def test_spec_augment_masks_only_real_frames_and_only_in_training(tokenizer):
    model = tiny_model(tokenizer, spec_augment_freq_masks=2, spec_augment_time_masks=3, spec_augment_time_width=40)
    features = torch.randn(8, 300, 80) + 5
    lengths = torch.tensor([300, 250, 200, 150, 100, 60, 30, 7])
    real = torch.arange(300) < lengths[:, None]
    features[~real] = 0.0
    for _ in range(20):
        masked = spec_augment(features, lengths, model.config)
        zeroed = (masked == 0) & (features != 0)
        assert not zeroed[~real].any()  # never past the real length
        for i, n in enumerate(lengths.tolist()):
            time_masked = zeroed[i, :n].all(-1).sum()
            assert time_masked <= 3 * min(40, n // 5)
            freq_masked = zeroed[i, :n].all(0).sum()
            assert freq_masked <= 2 * 27
    assert ((spec_augment(features, lengths, model.config) == 0) & real[..., None]).any()  # it does mask

    mask = real.long()
    with torch.no_grad():
        model.eval()
        a = model.model.encoder(features, mask).last_hidden_state
        b = model.model.encoder(features, mask).last_hidden_state
        torch.testing.assert_close(a, b)  # no augmentation at evaluation
        model.train()
        c = model.model.encoder(features, mask).last_hidden_state
        assert not torch.allclose(a, c)


def test_spec_augment_frequency_masks_leave_waveform_samples_alone(tokenizer):
    model = tiny_model(tokenizer, input_mode="fusion", spec_augment_freq_masks=2, spec_augment_freq_width=27)
    features = torch.randn(4, 200, 240) + 5
    lengths = torch.full((4,), 200)
    masked = spec_augment(features, lengths, model.config)
    zeroed = masked == 0
    assert zeroed[..., :80].any() and not zeroed[..., 80:].any()
    waveform_only = tiny_model(tokenizer, input_mode="waveform", spec_augment_freq_masks=2, spec_augment_time_masks=2)
    masked = spec_augment(torch.randn(4, 200, 160) + 5, lengths, waveform_only.config)
    zeroed = masked == 0
    assert (zeroed.all(-1) | ~zeroed.any(-1)).all()  # time masks only: whole frames or nothing


def test_frame_budget_batches_cover_every_utterance_within_the_budget():
    lengths = np.random.default_rng(0).integers(50, 900, size=300)
    sampler = FrameBudgetBatchSampler(lengths, max_frames=2000, seed=3)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for batch in batches for i in batch) == list(range(300))  # each once
        assert all(len(batch) * max(lengths[batch]) <= 2000 for batch in batches)
        epochs.append(batches)
    assert epochs[0] != epochs[1]  # shuffled again each epoch ...
    assert sorted(map(tuple, epochs[0])) == sorted(map(tuple, epochs[1]))  # ... the same batches
    sampler.set_epoch(1)
    assert list(sampler) == epochs[1]  # and the same order for the same epoch (a resumed run)
    # short utterances many to a batch, long ones few
    sizes = {len(batch): max(lengths[batch]) for batch in epochs[0]}
    assert max(sizes) >= 20 and sizes[min(sizes)] > 600


def test_sortagrad_goes_shortest_first_in_the_first_epoch_only():
    lengths = np.random.default_rng(1).integers(50, 900, size=100)
    sampler = FrameBudgetBatchSampler(lengths, max_frames=1500, seed=0, sortagrad=True)
    first = [max(lengths[batch]) for batch in sampler]
    assert first == sorted(first)
    sampler.set_epoch(1)
    assert [max(lengths[batch]) for batch in sampler] != first


def test_an_utterance_longer_than_the_frame_budget_is_named():
    with pytest.raises(ValueError, match="utterance 2 has 900 frames, more than max_frames 800"):
        FrameBudgetBatchSampler([100, 200, 900], max_frames=800)


@pytest.mark.parametrize("features", ["kaldi", "whisper"])
def test_vtlp_moves_a_tone_by_its_factor_on_the_features_mel_scale(tokenizer, features):
    extractor = SpeechSeqFeatureExtractor(features=features, normalization="none")
    config = tiny_model(tokenizer, vtlp_warp=0.2).config
    if features == "whisper":  # only the centres' scale matters here: Whisper's Slaney mels from 0 Hz
        config.encoder_type = "whisper"
    scale, low = ("slaney", 0.0) if features == "whisper" else ("kaldi", 20.0)
    centres = _mel_centres(80, scale, low, 8000.0)
    t = np.arange(16000) / 16000
    for tone in (1000.0, 2500.0):
        fbank = torch.from_numpy(extractor(np.sin(2 * np.pi * tone * t).astype(np.float32), sampling_rate=16000,
                                           return_tensors="np")["input_features"])  # fmt: skip
        peak = lambda x: centres[x[0, 20:-20].mean(0).argmax()]  # noqa: E731
        lengths = torch.tensor([fbank.shape[1]])
        assert abs(peak(fbank) / tone - 1) < 0.04  # a bin's width
        for factor in (0.85, 0.9, 1.1, 1.2):
            warped = vtlp(fbank, lengths, config, factors=torch.tensor([factor]))
            assert abs(peak(warped) / (tone * factor) - 1) < 0.04  # a higher (lower) voice: the tone moves up (down)


def test_vtlp_changes_only_real_frames_log_mels_draws_seeded_factors_and_only_in_training(tokenizer):
    model = tiny_model(tokenizer, input_mode="fusion", vtlp_warp=0.1, dropout=0.0)
    features = torch.randn(4, 120, 240)
    lengths = torch.tensor([120, 90, 40, 7])
    real = torch.arange(120) < lengths[:, None]
    torch.manual_seed(0)
    warped = vtlp(features, lengths, model.config)
    assert torch.isfinite(warped).all()
    torch.testing.assert_close(warped[~real], features[~real])  # padding untouched
    torch.testing.assert_close(warped[..., 80:], features[..., 80:])  # waveform samples untouched
    assert not torch.allclose(warped[real][:, :80], features[real][:, :80])
    torch.manual_seed(0)
    torch.testing.assert_close(vtlp(features, lengths, model.config), warped)  # a seed gives the same warps
    torch.testing.assert_close(vtlp(features, lengths, model.config, factors=torch.ones(4)), features)

    mask = real.long()
    with torch.no_grad():
        a = model.model.encoder(features, mask).last_hidden_state
        model.config.vtlp_warp = 0.0
        torch.testing.assert_close(model.model.encoder(features, mask).last_hidden_state, a)  # not at evaluation
        model.train()
        b = model.model.encoder(features, mask).last_hidden_state
        model.config.vtlp_warp = 0.1
        assert not torch.allclose(model.model.encoder(features, mask).last_hidden_state, b)


@pytest.mark.parametrize("warp", [-0.1, 0.5, "0.1", True])
def test_vtlp_warp_out_of_range_is_refused(tokenizer, warp):
    with pytest.raises(ValueError, match="vtlp_warp"):
        tiny_model(tokenizer, vtlp_warp=warp)
