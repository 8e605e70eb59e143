"""Log-mel filterbank features for speechseq, computed in torch over the whole batch."""

import functools
import numbers
import logging

import numpy as np
import torch
from transformers import BatchFeature, SequenceFeatureExtractor
from torch.nn.utils.rnn import pad_sequence
from transformers.audio_utils import mel_filter_bank

from .audio import resample, to_mono_float32
from .configuration_speechseq import INPUT_MODES, SAMPLES_PER_FRAME

__all__ = ["SpeechSeqFeatureExtractor"]

logger = logging.getLogger(__name__)

# Kaldi's fbank defaults (as torchaudio.compliance.kaldi.fbank and transformers' Speech2Text): 25 ms Povey window,
# 10 ms hop, 512-point FFT, DC offset removed and pre-emphasis 0.97 per frame, frames only where they fit
# (snip_edges), power spectrum, mel filters from 20 Hz, natural log with a float32-epsilon floor.
FRAME_LENGTH, HOP_LENGTH, N_FFT = 400, SAMPLES_PER_FRAME, 512
PREEMPHASIS, MEL_FLOOR, STD_FLOOR = 0.97, 1.192092955078125e-07, 1e-5
BLOCK_FRAMES = 512
NORMALIZATIONS = ("utterance", "global", "none")
FEATURES = ("kaldi", "whisper")


@functools.lru_cache(maxsize=4)
def _mel_filters(sampling_rate: int, num_mel_bins: int) -> torch.Tensor:
    filters = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=num_mel_bins,
        min_frequency=20,
        max_frequency=sampling_rate // 2,
        sampling_rate=sampling_rate,
        norm=None,
        mel_scale="kaldi",
        triangularize_in_mel_space=True,
    )
    return torch.from_numpy(filters).float()  # (N_FFT // 2 + 1, num_mel_bins)


@functools.lru_cache(maxsize=1)
def _povey_window() -> torch.Tensor:
    return torch.hann_window(FRAME_LENGTH, periodic=False, dtype=torch.float64).pow(0.85).float()


def num_frames(num_samples: int, features: str = "kaldi") -> int:
    """Frames of a waveform of `num_samples` samples: Kaldi's, where whole windows fit (0 when shorter than one
    window); or Whisper's, one a hop (its centred STFT's last frame dropped)."""
    if features == "whisper":
        return num_samples // HOP_LENGTH
    return max(0, 1 + (num_samples - FRAME_LENGTH) // HOP_LENGTH)


@functools.lru_cache(maxsize=2)
def _whisper_extractor(num_mel_bins: int, sampling_rate: int):
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=num_mel_bins, sampling_rate=sampling_rate)


class SpeechSeqFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Turns 16 kHz mono waveforms into 80-dimensional log-mel filterbanks (Kaldi-compatible, 25 ms window, 10 ms hop)
    and normalises them. Precomputed filterbanks, such as the assignment's `(80, T)` `.npy` arrays, are normalised
    the same way. For a model with a pretrained Whisper encoder, Whisper's own log-mels instead
    (`features="whisper"`), over each utterance's real length rather than 30 s.

    Args:
        feature_size (`int`, defaults to 80): mel bins.
        sampling_rate (`int`, defaults to 16000): the rate features are computed at; other rates are resampled.
        padding_value (`float`, defaults to 0.0): value of padded frames.
        features (`str`, defaults to `"kaldi"`): `"kaldi"`, the filterbanks above; or `"whisper"`, the log-mels of
            transformers' `WhisperFeatureExtractor` (centred 25 ms STFT, 10 ms hop, Slaney mel filters, log10
            clipped 8 below the utterance's peak and scaled as Whisper expects), computed per utterance and
            never padded to 30 s: what a Whisper encoder was trained on (`SpeechSeqConfig(encoder_type="whisper")`).
        normalization (`str`, *optional*): `"utterance"` (mean and variance over each utterance's real frames),
            `"global"` (the `global_mean` / `global_std` vectors, fitted by `fit_global_stats`) or `"none"`.
            Defaults to `"utterance"` for Kaldi features and `"none"` for Whisper's, which must stay as Whisper
            scales them.
        global_mean (`list[float]`, *optional*): per-bin mean for `"global"` normalisation.
        global_std (`list[float]`, *optional*): per-bin standard deviation for `"global"` normalisation.
        min_frames (`int`, defaults to 7): the fewest frames an utterance may have, the model's
            `config.min_input_frames` (7 for 4x subsampling: 85 ms of audio).
        input_mode (`str`, defaults to `"fbank"`): the model's `config.input_mode`: each frame carries its
            `feature_size` log-mels (`"fbank"`), the 160 waveform samples of its 10 ms hop, scaled to zero mean and
            unit variance over the utterance (`"waveform"`), or both, log-mels first (`"fusion"`). The waveform modes
            need audio, not precomputed filterbanks.

    Example:

    ```python
    >>> import numpy as np
    >>> from speechseq import SpeechSeqFeatureExtractor
    >>> extractor = SpeechSeqFeatureExtractor()
    >>> batch = extractor([np.zeros(16000), np.zeros(8000)], sampling_rate=16000, return_tensors="pt")
    >>> batch["input_features"].shape, batch["attention_mask"].sum(-1).tolist()
    (torch.Size([2, 98, 80]), [98, 48])
    ```
    """

    model_input_names = ["input_features", "attention_mask"]

    def __init__(
        self,
        feature_size=80,
        sampling_rate=16000,
        padding_value=0.0,
        normalization=None,
        global_mean=None,
        global_std=None,
        min_frames=7,
        input_mode="fbank",
        features="kaldi",
        **kwargs,
    ):
        kwargs.setdefault("return_attention_mask", True)
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
        if normalization is None:
            normalization = "none" if features == "whisper" else "utterance"
        if features == "whisper" and (normalization != "none" or input_mode != "fbank"):
            raise ValueError(f"Whisper's log-mels are scaled as its encoder expects: they take normalization 'none' "
                             f"and input_mode 'fbank', got {normalization!r} and {input_mode!r}")  # fmt: skip
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if normalization == "global":
            for name, stats in (("global_mean", global_mean), ("global_std", global_std)):
                if stats is None or len(stats) != feature_size:
                    raise ValueError(f"'global' normalization needs {name} with {feature_size} values; "
                                     "fit them with fit_global_stats(...)")  # fmt: skip
        if not isinstance(min_frames, int) or min_frames < 1:
            raise ValueError(f"min_frames must be a positive integer, got {min_frames!r}")
        if input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {input_mode!r}")
        self.input_mode = input_mode
        self.features = features
        self.normalization = normalization
        self.global_mean = None if global_mean is None else [float(v) for v in global_mean]
        self.global_std = None if global_std is None else [float(v) for v in global_std]
        self.min_frames = min_frames

    def __call__(
        self,
        raw_speech=None,
        sampling_rate: int | None = None,
        *,
        input_features=None,
        padding: bool | str = True,
        return_tensors: str | None = None,
        return_attention_mask: bool | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Args:
            raw_speech (`np.ndarray`, `torch.Tensor` or a list of them): one waveform (1-D), a batch of equal-length
                waveforms (2-D, one per row), or a list of waveforms, each 1-D or multi-channel 2-D. Floats in
                [-1, 1] or integer PCM.
            sampling_rate (`int`, *optional*): the rate of `raw_speech`; resampled when it differs from
                `self.sampling_rate`. Leaving it out assumes `self.sampling_rate`, with a warning.
            input_features (`np.ndarray` or a list of them, *optional*): precomputed, unnormalised log-mel
                filterbanks of shape `(feature_size, frames)`, the assignment's layout; instead of `raw_speech`.
            padding (`bool` or `str`, defaults to `True`): pad to the longest utterance and return an
                `attention_mask`; `False` returns one `(frames, feature_size)` array per utterance.
            return_tensors (`str`, *optional*): `"pt"` or `"np"`.

        Returns:
            [`BatchFeature`] with `input_features` `(batch, frames, values)` (`feature_size` log-mels, 160 samples or
            both, as `input_mode` says) and, when padding, `attention_mask` `(batch, frames)`.

        Raises:
            ValueError: naming the item and the reason, for empty audio, NaN or inf, a wrong number of dimensions,
                or audio too short for the model's subsampling.
        """
        if self.input_mode == "fbank":
            features = [self._normalize(f) for f in self._features(raw_speech, input_features, sampling_rate)]
        elif input_features is not None or raw_speech is None:
            raise ValueError(f"input_mode {self.input_mode!r} needs audio (raw_speech), not precomputed filterbanks")
        else:
            waveforms = self._waveforms(raw_speech, sampling_rate)
            features = [hop_blocks(w) for w in waveforms]
            if self.input_mode == "fusion":
                fbanks = self._log_mel(waveforms)
                features = [torch.cat([self._normalize(f), w], dim=-1) for f, w in zip(fbanks, features)]
        if not padding:
            return BatchFeature({"input_features": [f.numpy() for f in features]}, tensor_type=return_tensors)
        lengths = torch.tensor([len(f) for f in features])
        batch = {"input_features": pad_sequence(features, batch_first=True, padding_value=self.padding_value).numpy()}
        if return_attention_mask is None or return_attention_mask:
            batch["attention_mask"] = (torch.arange(int(lengths.max())) < lengths[:, None]).int().numpy()
        return BatchFeature(batch, tensor_type=return_tensors)

    def fit_global_stats(self, raw_speech=None, *, input_features=None, sampling_rate=None, batch_size: int = 16):
        """Fit the per-bin mean and standard deviation over a corpus, streamed, and switch to `"global"`.

        Args:
            raw_speech (iterable of waveforms, *optional*): read once, `batch_size` at a time, never all held.
            input_features (iterable of `(feature_size, frames)` arrays, *optional*): instead of `raw_speech`.
            sampling_rate (`int`, *optional*): the rate of every waveform.

        Returns:
            `self`, with `global_mean`, `global_std` and `normalization="global"` set (saved by `save_pretrained`).
        """
        if (raw_speech is None) == (input_features is None):
            raise ValueError("fit_global_stats takes exactly one of raw_speech or input_features")
        count, mean = 0, torch.zeros(self.feature_size, dtype=torch.float64)
        m2 = torch.zeros_like(mean)
        for chunk in _chunks(raw_speech if input_features is None else input_features, batch_size):
            if input_features is None:
                features = self._features(chunk, None, sampling_rate)
            else:
                features = self._features(None, chunk, None)
            valid = torch.cat(features).double()  # (frames, feature_size)
            # Chan et al.'s parallel update of a running mean and sum of squared deviations (Welford over chunks).
            n, chunk_mean = valid.shape[0], valid.mean(0)
            delta = chunk_mean - mean
            mean = mean + delta * n / (count + n)
            m2 = m2 + ((valid - chunk_mean) ** 2).sum(0) + delta**2 * count * n / (count + n)
            count += n
        if count == 0:
            raise ValueError("fit_global_stats got no audio")
        self.global_mean = mean.tolist()
        self.global_std = (m2 / count).sqrt().clamp(min=STD_FLOOR).tolist()
        self.normalization = "global"
        return self

    def _features(self, raw_speech, input_features, sampling_rate) -> list[torch.Tensor]:
        """Unnormalised log-mels, one (frames, feature_size) float32 tensor per utterance."""
        if (raw_speech is None) == (input_features is None):
            raise ValueError("pass exactly one of raw_speech (waveforms) or input_features (filterbanks)")
        if input_features is not None:
            items = _as_items(input_features, batch_ndim=3)
            return [self._check_filterbank(f, i) for i, f in enumerate(items)]
        return self._log_mel(self._waveforms(raw_speech, sampling_rate))

    def _waveforms(self, raw_speech, sampling_rate) -> list[torch.Tensor]:
        """Checked mono float32 waveforms at `self.sampling_rate`, one per utterance."""
        if sampling_rate is None:
            logger.warning(
                "It is strongly recommended to pass the `sampling_rate` argument to SpeechSeqFeatureExtractor; "
                "assuming %d Hz. Failing to do so can result in silent errors that might be hard to debug.",
                self.sampling_rate,
            )
            sampling_rate = self.sampling_rate
        elif not isinstance(sampling_rate, (int, float)) or not sampling_rate > 0:
            raise ValueError(f"sampling_rate must be a positive number, got {sampling_rate!r}")
        items = _as_items(raw_speech, batch_ndim=2)
        if not items:
            raise ValueError("got an empty batch of audio")
        waveforms = []
        for i, audio in enumerate(items):
            audio = resample(to_mono_float32(audio, where=f"audio item {i}"), sampling_rate, self.sampling_rate)
            frames = num_frames(len(audio), self.features)
            if frames < self.min_frames:
                shortest = (self.min_frames * HOP_LENGTH if self.features == "whisper"
                            else FRAME_LENGTH + (self.min_frames - 1) * HOP_LENGTH)  # fmt: skip
                raise ValueError(
                    f"audio item {i}: {len(audio) / self.sampling_rate:.3f} s of audio gives {frames} frames; the "
                    f"model needs at least {self.min_frames} ({shortest / self.sampling_rate:.3f} s)"
                )
            waveforms.append(torch.from_numpy(audio))
        return waveforms

    def _log_mel(self, waveforms: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.features == "whisper":
            extractor = _whisper_extractor(self.feature_size, self.sampling_rate)
            return [torch.from_numpy(np.ascontiguousarray(extractor(
                w.numpy(), sampling_rate=self.sampling_rate, padding="longest", truncation=False, return_tensors="np",
            ).input_features[0].T)) for w in waveforms]  # fmt: skip
        lengths = [num_frames(len(w)) for w in waveforms]
        frames = torch.cat([w.unfold(0, FRAME_LENGTH, HOP_LENGTH) for w in waveforms])  # (frames of the batch, 400)
        features = torch.empty(len(frames), self.feature_size)
        window, filters = _povey_window(), _mel_filters(self.sampling_rate, self.feature_size)
        padded = torch.zeros(BLOCK_FRAMES, N_FFT)  # frames zero-padded to the FFT size
        # Blocks of frames from the whole batch: small enough to stay in cache, which is ~3x faster than one pass.
        for start in range(0, len(frames), BLOCK_FRAMES):
            block = frames[start : start + BLOCK_FRAMES] * 32768.0  # Kaldi's 16-bit scale
            block -= block.mean(dim=-1, keepdim=True)  # DC offset
            out = padded[: len(block)]
            torch.sub(block[:, 1:], block[:, :-1], alpha=PREEMPHASIS, out=out[:, 1:FRAME_LENGTH])
            torch.mul(block[:, 0], 1 - PREEMPHASIS, out=out[:, 0])
            out[:, :FRAME_LENGTH] *= window
            power = torch.view_as_real(torch.fft.rfft(out)).pow(2).sum(-1)  # (block, N_FFT // 2 + 1)
            torch.matmul(power, filters, out=features[start : start + len(block)])
        features = features.clamp_(min=MEL_FLOOR).log_()
        return list(features.split(lengths))

    def _check_filterbank(self, features, i: int) -> torch.Tensor:
        features = np.asarray(features)
        where = f"input_features item {i}"
        if features.ndim != 2 or features.shape[0] != self.feature_size:
            raise ValueError(f"{where}: expected a ({self.feature_size}, frames) filterbank, got shape "
                             f"{features.shape}")  # fmt: skip
        if features.dtype.kind not in "fiu":
            raise ValueError(f"{where}: expected a numeric array, got dtype {features.dtype}")
        if features.shape[1] < self.min_frames:
            raise ValueError(f"{where}: {features.shape[1]} frames; the model needs at least {self.min_frames}")
        if not np.isfinite(features).all():
            raise ValueError(f"{where}: the filterbank contains NaN or inf")
        return torch.from_numpy(np.ascontiguousarray(features.T, dtype=np.float32))

    def _normalize(self, features: torch.Tensor) -> torch.Tensor:
        """One utterance's (frames, feature_size) log-mels, normalised as configured."""
        if self.normalization == "utterance":
            mean, std = features.mean(0), features.std(0, correction=0)
            return (features - mean) / std.clamp(min=STD_FLOOR)
        if self.normalization == "global":
            return (features - torch.tensor(self.global_mean)) / torch.tensor(self.global_std)
        return features


def hop_blocks(waveform: torch.Tensor) -> torch.Tensor:
    """A waveform as (frames, HOP_LENGTH) blocks, block t the hop that starts frame t (the samples after the last
    frame's hop are left out), scaled to zero mean and unit variance over the utterance (as wav2vec 2.0's inputs)."""
    frames = num_frames(len(waveform))
    samples = waveform[: frames * HOP_LENGTH]
    samples = (samples - samples.mean()) / samples.std(correction=0).clamp(min=STD_FLOOR)
    return samples.reshape(frames, HOP_LENGTH)


def _as_items(x, batch_ndim: int) -> list:
    """A batch as a list of items. One array or tensor is one item, unless it has `batch_ndim` dimensions (a batch of
    equal-length items, one per row, as in transformers); a flat list of numbers is one item too."""
    if hasattr(x, "ndim"):
        return list(x) if x.ndim == batch_ndim else [x]
    items = list(x)
    return [items] if items and isinstance(items[0], numbers.Number) else items


def _chunks(iterable, size: int):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
