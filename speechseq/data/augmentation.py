"""Waveform augmentation for unseen voices and channels, on the fly in the training collator only.

Each is off unless asked for, and each draws from a generator seeded per batch, so a seed gives the same augmented
batches again:
- speed perturbation (Ko et al., 2015, Kaldi's 0.9 / 1.0 / 1.1): resampling, which changes tempo and pitch (and so
  the apparent vocal tract) together; the only one that changes an utterance's length;
- additive noise at a random signal-to-noise ratio: white or pink (1/f) noise, made here (no noise corpus ships);
- band-limiting: a telephone channel (300-3400 Hz) or a 7 kHz wide-band codec, as an FFT brick-wall filter;
- reverberation: a synthetic room (exponentially decaying noise, RT60 0.2-0.7 s, after a direct path), the tail cut
  at the utterance's end;
- pauses: quiet room tone (white noise 20-50 dB below each utterance) before and after a batch's utterances, so
  that a model trained on TTS, whose pauses are digital silence, learns that a quiet stretch is no speech (the demo's
  model heard an "f" in the pauses of long recordings, and glued their sentences); the pauses' lengths are drawn per
  batch, as joining is, so that a batch of utterances of one length pads no more than the pauses themselves;
- joining: a batch's utterances joined in pairs of neighbours, a pause between the two and their transcripts joined by
  a space, so that a model trained on a corpus of single sentences also hears what a long recording's segments hold
  (several sentences, pauses inside); batches are grouped by length, so a joined batch pads about as many frames
  (the whole batch is joined or none of it: half of it joined would pad the single utterances to the pairs).

Written here rather than taken from torchaudio or audiomentations: torchaudio cannot be installed beside torch 2.13
on these machines, and the transforms are a few lines of numpy and soxr each.
"""

from dataclasses import dataclass

import numpy as np
import soxr

__all__ = ["SpeechAugmentation"]

SAMPLING_RATE = 16000
BANDS = {"telephone": (300.0, 3400.0), "wideband": (50.0, 7000.0)}


@dataclass(frozen=True)
class SpeechAugmentation:
    """What to do to each training waveform (16 kHz, float). Probabilities are per utterance (joining's: per batch).

    Args:
        speed_factors (`tuple[float, ...]`, defaults to `()`): one is drawn per utterance (1.0 leaves it); Kaldi's
            recipes use `(0.9, 1.0, 1.1)`.
        noise_probability (`float`, defaults to 0): how often noise is added.
        noise_snr_db (`tuple[float, float]`, defaults to `(10, 30)`): the range its signal-to-noise ratio is drawn from.
        band_limit_probability (`float`, defaults to 0): how often a channel's band (`"telephone"` or `"wideband"`,
            equally likely) is imposed.
        reverb_probability (`float`, defaults to 0): how often the utterance is reverberated.
        pause_probability (`float`, defaults to 0): how often a batch's utterances get a pause of room tone before
            and after each ([`~SpeechAugmentation.pause`]; the transcripts unchanged), before the other transforms
            (so a room and a channel reach the pauses too).
        pause_seconds (`tuple[float, float]`, defaults to `(0.1, 1.0)`): the range the pauses' lengths are drawn
            from (one before and one after, for the whole batch).
        pause_snr_db (`tuple[float, float]`, defaults to `(20, 50)`): how far below the utterance's mean power its
            room tone is, drawn from this range.
        join_probability (`float`, defaults to 0): how often a batch's utterances are joined in pairs
            ([`~SpeechAugmentation.join`]), before the other transforms (so noise fills the pause too).
        join_pause_seconds (`tuple[float, float]`, defaults to `(0.1, 1.0)`): the range the pause's length (digital
            silence) is drawn from.
        join_ctc_only (`bool`, defaults to `False`): joined batches teach the CTC head alone (the collator marks
            them `ctc_only` and the trainer leaves their attention loss out), so that the decoder goes on learning
            single sentences and where they end.
    """

    speed_factors: tuple[float, ...] = ()
    noise_probability: float = 0.0
    noise_snr_db: tuple[float, float] = (10.0, 30.0)
    band_limit_probability: float = 0.0
    reverb_probability: float = 0.0
    pause_probability: float = 0.0
    pause_seconds: tuple[float, float] = (0.1, 1.0)
    pause_snr_db: tuple[float, float] = (20.0, 50.0)
    join_probability: float = 0.0
    join_pause_seconds: tuple[float, float] = (0.1, 1.0)
    join_ctc_only: bool = False

    def __post_init__(self):
        object.__setattr__(self, "speed_factors", tuple(float(f) for f in self.speed_factors))
        object.__setattr__(self, "noise_snr_db", tuple(float(x) for x in self.noise_snr_db))
        for name in ("join_pause_seconds", "pause_seconds", "pause_snr_db"):
            object.__setattr__(self, name, tuple(float(x) for x in getattr(self, name)))
        if any(not 0.5 <= f <= 2.0 for f in self.speed_factors):
            raise ValueError(f"speed_factors must lie in [0.5, 2], got {self.speed_factors}")
        for name in ("noise_probability", "band_limit_probability", "reverb_probability", "pause_probability",
                     "join_probability"):  # fmt: skip
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if len(self.noise_snr_db) != 2 or self.noise_snr_db[0] > self.noise_snr_db[1]:
            raise ValueError(f"noise_snr_db must be (low, high) with low <= high, got {self.noise_snr_db}")
        for name in ("join_pause_seconds", "pause_seconds", "pause_snr_db"):
            low_high = getattr(self, name)
            if len(low_high) != 2 or not 0 <= low_high[0] <= low_high[1]:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {low_high}")

    def join(
        self, waveforms: list[np.ndarray], texts: list[str], rng: np.random.Generator
    ) -> tuple[list[np.ndarray], list[str]]:
        """`(waveforms, texts)`, with probability `join_probability` joined in pairs of neighbours (the first and
        second, the third and fourth, ...; an odd last one stays alone): the first waveform, a pause of silence, the
        second; their transcripts with a space. Draws nothing from `rng` when `join_probability` is 0."""
        if not self.join_probability or rng.random() >= self.join_probability:
            return list(waveforms), list(texts)
        joined_waveforms, joined_texts = [], []
        for i in range(0, len(waveforms) - 1, 2):
            pause = np.zeros(round(rng.uniform(*self.join_pause_seconds) * SAMPLING_RATE), dtype=np.float32)
            joined_waveforms.append(np.concatenate([waveforms[i], pause, waveforms[i + 1]]).astype(np.float32))
            joined_texts.append(f"{texts[i]} {texts[i + 1]}")
        if len(waveforms) % 2:
            joined_waveforms.append(waveforms[-1])
            joined_texts.append(texts[-1])
        return joined_waveforms, joined_texts

    def pause(self, waveforms: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """`waveforms`, with probability `pause_probability` each with room tone before and after it (`add_pauses`):
        pauses of the same lengths for the whole batch, each at its own level. Draws nothing from `rng` when
        `pause_probability` is 0, so that a seed gives the batches it gave before pauses existed."""
        if not self.pause_probability or rng.random() >= self.pause_probability:
            return list(waveforms)
        seconds = tuple(rng.uniform(*self.pause_seconds, size=2))
        return [add_pauses(x, seconds, rng.uniform(*self.pause_snr_db), rng) for x in waveforms]

    def __call__(self, waveform: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One augmented copy of `waveform` (1-D float32, 16 kHz): finite, as long as the input but for speed."""
        x = np.asarray(waveform, dtype=np.float32)
        if self.speed_factors:
            x = speed_perturb(x, rng.choice(self.speed_factors))
        if rng.random() < self.reverb_probability:
            x = reverberate(x, rng)
        if rng.random() < self.band_limit_probability:
            x = band_limit(x, *BANDS[rng.choice(list(BANDS))])
        if rng.random() < self.noise_probability:
            x = add_noise(x, rng.uniform(*self.noise_snr_db), rng)
        return np.nan_to_num(x).astype(np.float32)


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Play `x` `factor` times faster: resampled as if recorded at 16 kHz x factor (tempo and pitch both move)."""
    if factor == 1.0:
        return x
    return soxr.resample(x, SAMPLING_RATE * factor, SAMPLING_RATE).astype(np.float32)


def fft_length(n: int) -> int:
    """The smallest length >= `n` whose only prime factors are 2, 3 and 5: numpy's FFT of an utterance's own length
    (often a large prime factor) took 15 ms where this one takes 0.7, and the FFTs were most of a training batch's
    augmentation (the dataloader worker shares the 2 cores with the training step)."""
    best = 1 << max(0, (n - 1).bit_length())
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            candidate = power35 << max(0, (-(-n // power35) - 1).bit_length())  # times the power of 2 that reaches n
            best = min(best, candidate)
            power35 *= 3
        power5 *= 5
    return best


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """`x` plus white or pink noise at `snr_db` below its mean power."""
    if rng.random() < 0.5:  # pink: white noise shaped by 1/sqrt(f) in amplitude, made at a fast length and cut
        size = fft_length(len(x))
        spectrum = np.fft.rfft(rng.standard_normal(size))
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
        noise = np.fft.irfft(spectrum, n=size)[: len(x)]
    else:
        noise = rng.standard_normal(len(x))
    signal_power, noise_power = np.mean(x.astype(np.float64) ** 2), np.mean(noise**2)
    if signal_power == 0 or noise_power == 0:
        return x
    scale = np.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    return (x + scale * noise).astype(np.float32)


def add_pauses(x: np.ndarray, seconds: tuple[float, float], snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """`x` with `seconds[0]` of room tone before it and `seconds[1]` after: white noise `snr_db` below `x`'s mean
    power (digital silence for a silent `x`)."""
    before, after = (round(s * SAMPLING_RATE) for s in seconds)
    level = np.sqrt(np.mean(x.astype(np.float64) ** 2) / 10 ** (snr_db / 10))
    tone = (level * rng.standard_normal(before + after)).astype(np.float32)
    return np.concatenate([tone[:before], x, tone[before:]])


def band_limit(x: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """`x` with everything outside [low_hz, high_hz] removed: filtered padded with silence to a fast FFT length
    (`fft_length`), then cut back to its length. The cut leaks a little back outside the band (at most 0.07% of the
    power on 40 of the demo corpus's utterances, and on white noise); a brick wall at the utterance's own length
    leaks none, but its FFT can take 20 times as long."""
    size = fft_length(len(x))
    spectrum = np.fft.rfft(x, size)
    frequencies = np.fft.rfftfreq(size, 1 / SAMPLING_RATE)
    spectrum[(frequencies < low_hz) | (frequencies > high_hz)] = 0
    return np.fft.irfft(spectrum, n=size)[: len(x)].astype(np.float32)


def reverberate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`x` in a synthetic room: a direct path, then exponentially decaying noise with RT60 drawn from 0.2-0.7 s,
    cut at the utterance's end and scaled to the input's peak."""
    rt60 = rng.uniform(0.2, 0.7)
    t = np.arange(int(rt60 * SAMPLING_RATE)) / SAMPLING_RATE
    response = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    response[0] = 1.0 / 0.3  # the direct path dominates the early reflections
    size = fft_length(len(x) + len(response) - 1)  # at least the full convolution's length: exact
    wet = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(response, size), n=size)[: len(x)]
    peak = np.max(np.abs(wet))
    return (wet * (np.max(np.abs(x)) / peak) if peak > 0 else wet).astype(np.float32)
