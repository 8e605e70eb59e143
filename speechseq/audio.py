"""Reading and conditioning audio: files through soundfile, resampling through soxr, no ffmpeg or torchaudio."""

import io
import os

import numpy as np
import soundfile
import soxr

__all__ = ["load_audio", "to_mono_float32", "resample"]


def to_mono_float32(audio, where: str = "audio") -> np.ndarray:
    """A waveform as 1-D float32 in [-1, 1]: integers are scaled by their full range, multi-channel is averaged.

    A 2-D array is (samples, channels), as soundfile reads it, or (channels, samples): the shorter axis is taken as
    the channels. `where` names the input in error messages.

    Raises:
        ValueError: when the array is empty, not 1-D or 2-D, of a non-numeric type, or holds NaN or inf.
    """
    if hasattr(audio, "detach"):  # a torch tensor
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio)
    if audio.ndim not in (1, 2):
        raise ValueError(f"{where}: expected a 1-D waveform or a 2-D multi-channel array, got shape {audio.shape}")
    if audio.size == 0:
        raise ValueError(f"{where}: the audio is empty")
    if audio.dtype.kind in "iu":
        info = np.iinfo(audio.dtype)
        offset = (int(info.max) + int(info.min) + 1) / 2  # 128 for uint8, 0 for signed types
        audio = (audio.astype(np.float64) - offset) / (int(info.max) + 1 - offset)
    elif audio.dtype.kind != "f":
        raise ValueError(f"{where}: audio must be an integer or float array, got dtype {audio.dtype}")
    if audio.ndim == 2:
        channel_axis = 0 if audio.shape[0] < audio.shape[1] else 1
        audio = audio.mean(axis=channel_axis)
    if not np.isfinite(audio).all():
        raise ValueError(f"{where}: the audio contains NaN or inf (first at sample {np.argmin(np.isfinite(audio))})")
    return np.ascontiguousarray(audio, dtype=np.float32)


def resample(audio: np.ndarray, orig_sampling_rate: float, sampling_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr (high quality), float32 in and out."""
    if orig_sampling_rate == sampling_rate:
        return audio
    return soxr.resample(audio, orig_sampling_rate, sampling_rate).astype(np.float32, copy=False)


def load_audio(path, sampling_rate: int = 16000) -> np.ndarray:
    """Read an audio file (wav, flac, ogg, mp3: what libsndfile reads) as mono float32 at `sampling_rate`.

    Args:
        path (`str`, `os.PathLike`, `bytes` or a binary file object): the file, or its encoded bytes.
        sampling_rate (`int`, defaults to 16000): the rate to resample to.

    Returns:
        `np.ndarray` of shape `(samples,)`, float32.

    Raises:
        ValueError: when the file is missing, unreadable, empty or holds NaN or inf, saying which file and why.
    """
    where = "<bytes>" if isinstance(path, (bytes, bytearray)) else str(path)
    source = io.BytesIO(path) if isinstance(path, (bytes, bytearray)) else path
    if isinstance(source, (str, os.PathLike)) and not os.path.isfile(source):
        raise ValueError(f"audio file {where} does not exist")
    try:
        audio, file_sampling_rate = soundfile.read(source, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise ValueError(f"cannot read audio file {where}: {error}") from error
    audio = to_mono_float32(audio.mean(axis=1) if audio.size else audio[:, 0], where=f"audio file {where}")
    return resample(audio, file_sampling_rate, sampling_rate)
