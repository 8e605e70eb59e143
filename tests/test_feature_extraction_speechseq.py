import functools
import logging

import numpy as np
import pytest
import soxr
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

from speechseq import SpeechSeqFeatureExtractor, SpeechSeqProcessor, train_tokenizer

from conftest import tone_signal

rng = np.random.default_rng(0)
NOISE = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 23456, 4000)]


def reference_log_mel(waveform):
    """Kaldi-style log-mel in float64, frame by frame, by transformers' numpy audio utilities."""
    filters = mel_filter_bank(
        num_frequency_bins=257, num_mel_filters=80, min_frequency=20, max_frequency=8000, sampling_rate=16000,
        norm=None, mel_scale="kaldi", triangularize_in_mel_space=True,
    )  # fmt: skip
    return spectrogram(
        waveform.astype(np.float64) * 32768, window_function(400, "povey", periodic=False), frame_length=400,
        hop_length=160, fft_length=512, power=2.0, center=False, preemphasis=0.97, mel_filters=filters,
        log_mel="log", mel_floor=1.192092955078125e-07, remove_dc_offset=True,
    ).T  # fmt: skip


def test_log_mel_matches_a_float64_reference():
    out = SpeechSeqFeatureExtractor(normalization="none")(NOISE, sampling_rate=16000, return_tensors="np")
    for i, waveform in enumerate(NOISE):
        reference = reference_log_mel(waveform)
        assert out["attention_mask"][i].sum() == len(reference)
        np.testing.assert_allclose(out["input_features"][i, : len(reference)], reference, atol=2e-3)
        assert (out["input_features"][i, len(reference) :] == 0).all()


def test_utterance_normalization_per_utterance_and_batch_independent():
    extractor = SpeechSeqFeatureExtractor()
    out = extractor(NOISE, sampling_rate=16000, return_tensors="np")
    for i, waveform in enumerate(NOISE):
        n = out["attention_mask"][i].sum()
        real = out["input_features"][i, :n]
        np.testing.assert_allclose(real.mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(real.std(0), 1, atol=1e-3)
        alone = extractor(waveform, sampling_rate=16000, return_tensors="np")["input_features"][0]
        np.testing.assert_allclose(real, alone, atol=1e-5)


def test_unpadded_output_is_one_array_per_utterance():
    out = SpeechSeqFeatureExtractor()(NOISE, sampling_rate=16000, padding=False)
    assert [f.shape for f in out["input_features"]] == [(98, 80), (145, 80), (23, 80)]
    assert "attention_mask" not in out


def test_global_stats_are_streamed_saved_and_loaded(tmp_path):
    raw = SpeechSeqFeatureExtractor(normalization="none")
    frames = np.concatenate([raw(w, sampling_rate=16000, padding=False)["input_features"][0] for w in NOISE])
    extractor = SpeechSeqFeatureExtractor().fit_global_stats((w for w in NOISE), sampling_rate=16000, batch_size=2)
    assert extractor.normalization == "global"
    np.testing.assert_allclose(extractor.global_mean, frames.mean(0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(extractor.global_std, frames.std(0), rtol=1e-5, atol=1e-4)

    extractor.save_pretrained(tmp_path)
    loaded = SpeechSeqFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.normalization == "global" and loaded.global_mean == extractor.global_mean
    out = loaded(NOISE[0], sampling_rate=16000, return_tensors="np")["input_features"][0]
    expected = (raw(NOISE[0], sampling_rate=16000)["input_features"][0] - frames.mean(0)) / frames.std(0)
    np.testing.assert_allclose(out, expected, atol=1e-3)

    fbanks = [raw(w, sampling_rate=16000, padding=False)["input_features"][0].T for w in NOISE]
    from_features = SpeechSeqFeatureExtractor().fit_global_stats(input_features=iter(fbanks), batch_size=2)
    np.testing.assert_allclose(from_features.global_mean, extractor.global_mean, rtol=1e-6)


def test_global_normalization_without_stats_raises():
    with pytest.raises(ValueError, match="global_mean"):
        SpeechSeqFeatureExtractor(normalization="global")


def test_precomputed_filterbanks_in_the_assignments_layout():
    raw = SpeechSeqFeatureExtractor(normalization="none")(NOISE, sampling_rate=16000, padding=False)
    fbanks = [f.T for f in raw["input_features"]]  # (80, T), as in <split>/fbank/*.npy
    extractor = SpeechSeqFeatureExtractor()
    from_fbank = extractor(input_features=fbanks, return_tensors="np")
    from_audio = extractor(NOISE, sampling_rate=16000, return_tensors="np")
    np.testing.assert_array_equal(from_fbank["attention_mask"], from_audio["attention_mask"])
    np.testing.assert_allclose(from_fbank["input_features"], from_audio["input_features"], atol=1e-5)
    with pytest.raises(ValueError, match=r"input_features item 0: expected a \(80, frames\)"):
        extractor(input_features=[fbanks[0].T])


def test_resampling_downmixing_and_integer_scaling():
    extractor = SpeechSeqFeatureExtractor(normalization="none")
    clip = tone_signal([300, 900, 1700], seconds=2.0)
    expected = extractor(clip, sampling_rate=16000, return_tensors="np")["input_features"][0]
    for rate in (8000, 22050, 44100, 48000):
        features = extractor(soxr.resample(clip, 16000, rate), sampling_rate=rate, return_tensors="np")
        features = features["input_features"][0]
        n = min(len(features), len(expected)) - 2  # resampling may shift the last frame
        # compare the bands the tones live in (below 4 kHz: mel bins up to ~60) away from the edges
        assert np.abs(features[2:n, :55] - expected[2:n, :55]).mean() < 0.25
    stereo = np.stack([clip, clip], axis=1)  # (samples, channels)
    np.testing.assert_allclose(extractor([stereo], sampling_rate=16000)["input_features"][0], expected, atol=1e-5)
    np.testing.assert_allclose(extractor([stereo.T], sampling_rate=16000)["input_features"][0], expected, atol=1e-5)
    pcm = np.round(clip * 32767).astype(np.int16)
    from_pcm = extractor(pcm, sampling_rate=16000)["input_features"][0]
    scaled = extractor(pcm.astype(np.float32) / 32768, sampling_rate=16000)["input_features"][0]
    np.testing.assert_allclose(from_pcm, scaled, atol=1e-5)


def test_missing_sampling_rate_warns(caplog):
    with caplog.at_level(logging.WARNING):
        SpeechSeqFeatureExtractor()(NOISE[0])
    assert "sampling_rate" in caplog.text


@pytest.mark.parametrize(
    "audio, message",
    [
        ([NOISE[0], np.zeros(0, np.float32)], "audio item 1: the audio is empty"),
        ([np.array([0.1] * 800 + [np.nan] + [0.1] * 800)], "audio item 0: the audio contains NaN or inf"),
        ([np.array([0.1] * 800 + [np.inf] * 800)], "audio item 0: the audio contains NaN or inf"),
        ([np.zeros((2, 2, 8000))], r"audio item 0: expected a 1-D waveform or a 2-D multi-channel array"),
        ([NOISE[0], np.zeros(1000)], r"audio item 1: 0.062 s of audio gives 4 frames; the model needs at least 7"),
        ([np.array(["a", "b"])], "audio item 0: audio must be an integer or float array"),
    ],
)
def test_bad_audio_raises_naming_the_item(audio, message):
    with pytest.raises(ValueError, match=message):
        SpeechSeqFeatureExtractor()(audio, sampling_rate=16000)


def test_bad_sampling_rate_raises():
    with pytest.raises(ValueError, match="sampling_rate"):
        SpeechSeqFeatureExtractor()(NOISE[0], sampling_rate=-8000)


waveforms = st.builds(
    lambda **kwargs: _random_waveform(**kwargs),
    n=st.one_of(st.integers(0, 2000), st.integers(2000, 50000)),
    channels=st.sampled_from([0, 1, 2, 3]),  # 0: a 1-D array
    layout=st.sampled_from(["samples_first", "channels_first"]),
    dtype=st.sampled_from([np.float32, np.float64, np.int16, np.int32, np.uint8]),
    rate=st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]),
    sprinkle=st.sampled_from([None, None, None, np.nan, np.inf, -np.inf]),
    seed=st.integers(0, 2**16),
)  # fmt: skip


def _random_waveform(n, channels, layout, dtype, rate, sprinkle, seed):
    g = np.random.default_rng(seed)
    shape = (n,) if channels == 0 else (n, channels) if layout == "samples_first" else (channels, n)
    x = g.uniform(-1, 1, size=shape)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        x = ((x + 1) / 2 * (int(info.max) - int(info.min)) + int(info.min)).astype(dtype)
    else:
        x = x.astype(dtype)
        if sprinkle is not None and x.size:
            x.flat[g.integers(0, x.size)] = sprinkle
    return x, rate


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(item=waveforms)
def test_any_waveform_gives_finite_features_or_a_value_error(item):
    audio, rate = item
    processor = _processor()
    try:
        out = processor(audio=[audio], sampling_rate=rate, text=["ab"], return_tensors="pt")
    except ValueError as error:
        assert str(error).startswith("audio item 0")
        event("ValueError", next((r for r in ("empty", "NaN", "frames", "dimensions") if r in str(error)), "other"))
        return
    event("features")
    features = out["input_features"]
    assert features.shape[0] == 1 and features.shape[2] == 80 and features.shape[1] >= 7
    assert torch.isfinite(features).all()
    assert out["attention_mask"].sum() == features.shape[1]
    assert out["labels"].tolist() == [[6, 7, 4]]


@functools.cache
def _processor():
    return SpeechSeqProcessor(SpeechSeqFeatureExtractor(), train_tokenizer(["ab"]))


def test_waveform_and_fusion_inputs_carry_each_frames_hop(tmp_path):
    fbank = SpeechSeqFeatureExtractor()(NOISE[:2], sampling_rate=16000, return_tensors="np")
    fusion = SpeechSeqFeatureExtractor(input_mode="fusion")(NOISE[:2], sampling_rate=16000, return_tensors="np")
    waveform = SpeechSeqFeatureExtractor(input_mode="waveform")(NOISE[:2], sampling_rate=16000, return_tensors="np")
    frames = fbank["input_features"].shape[1]
    assert fusion["input_features"].shape == (2, frames, 240) and waveform["input_features"].shape == (2, frames, 160)
    np.testing.assert_array_equal(fusion["attention_mask"], fbank["attention_mask"])
    np.testing.assert_allclose(fusion["input_features"][..., :80], fbank["input_features"])
    np.testing.assert_allclose(fusion["input_features"][..., 80:], waveform["input_features"])
    for i, audio in enumerate(NOISE[:2]):
        n = int(fbank["attention_mask"][i].sum())  # frame t carries samples [160 t, 160 t + 160), standardised
        samples = audio[: n * 160].astype(np.float64)
        expected = ((samples - samples.mean()) / samples.std()).reshape(n, 160)
        np.testing.assert_allclose(waveform["input_features"][i, :n], expected, rtol=1e-4, atol=1e-4)
        assert not waveform["input_features"][i, n:].any()  # padding
    extractor = SpeechSeqFeatureExtractor(input_mode="fusion")
    extractor.save_pretrained(tmp_path)
    assert SpeechSeqFeatureExtractor.from_pretrained(tmp_path).input_mode == "fusion"
    with pytest.raises(ValueError, match="needs audio"):
        extractor(input_features=[np.zeros((80, 50), np.float32)])
    with pytest.raises(ValueError, match="input_mode must be one of"):
        SpeechSeqFeatureExtractor(input_mode="wav")
