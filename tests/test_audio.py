import numpy as np
import pytest
import soundfile

from speechseq import load_audio

from conftest import tone_signal


@pytest.mark.parametrize("fmt, subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("WAV", "FLOAT")])
def test_load_audio_reads_resamples_and_downmixes(tmp_path, fmt, subtype):
    clip = tone_signal([440, 1000], seconds=0.5, sampling_rate=44100)
    path = tmp_path / f"clip.{fmt.lower()}"
    soundfile.write(path, np.stack([clip, clip], axis=1), 44100, format=fmt, subtype=subtype)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == 8000
    expected = tone_signal([440, 1000], seconds=0.5)
    assert np.abs(audio[100:-100] - expected[100:-100]).max() < 2e-3
    assert len(load_audio(path, sampling_rate=8000)) == 4000
    assert np.array_equal(load_audio(path.read_bytes()), audio)


def test_load_audio_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="missing.wav does not exist"):
        load_audio(tmp_path / "missing.wav")
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC but not really")
    with pytest.raises(ValueError, match="cannot read audio file .*corrupt.flac"):
        load_audio(corrupt)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError, match="empty.wav: the audio is empty"):
        load_audio(empty)
