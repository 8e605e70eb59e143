"""speechseq-transcribe: text, JSON and subtitles that parse back."""

import json
import re

import pytest
import soundfile

from conftest import TRANSCRIPTS
from speechseq.transcribe import cues, main, to_srt, to_vtt


@pytest.fixture
def audio_files(tmp_path, signals):
    paths = []
    for i, signal in enumerate(signals):
        soundfile.write(path := tmp_path / f"clip{i}.flac", signal, 16000)
        paths.append(str(path))
    return paths


def test_text_and_json(trained_dir, audio_files, tmp_path, capsys):
    main([str(trained_dir), *audio_files])
    assert capsys.readouterr().out.splitlines() == TRANSCRIPTS
    main([str(trained_dir), audio_files[0], "--format", "json", "--timestamps", "word", "--output_dir",
          str(tmp_path / "out")])  # fmt: skip
    result = json.loads((tmp_path / "out" / "clip0.json").read_text())
    assert result["text"] == TRANSCRIPTS[0] and [c["text"] for c in result["chunks"]] == TRANSCRIPTS[0].split()


CUE = re.compile(r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d) --> (\d\d):(\d\d):(\d\d)[,.](\d\d\d)\n(.+)")


def parse(text):
    """(start, end, text) of each cue of an SRT or WebVTT file."""
    seconds = lambda h, m, s, ms: int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000  # noqa: E731
    return [(seconds(*g[:4]), seconds(*g[4:8]), g[8]) for g in CUE.findall(text)]


@pytest.mark.parametrize("format", ["srt", "vtt"])
def test_subtitles_parse_back(trained_dir, audio_files, tmp_path, format):
    main([str(trained_dir), *audio_files, "--format", format, "--output_dir", str(tmp_path)])
    for path, transcript in zip(audio_files, TRANSCRIPTS):
        text = (tmp_path / f"clip{audio_files.index(path)}.{format}").read_text()
        assert text.startswith("1\n" if format == "srt" else "WEBVTT\n\n")
        parsed = parse(text)
        assert " ".join(t for _, _, t in parsed) == transcript
        times = [t for start, end, _ in parsed for t in (start, end)]
        assert times == sorted(times) and times[-1] <= 1.0 + 0.04


def test_cues_respect_their_limits():
    words = [{"text": w, "timestamp": (i * 0.5, i * 0.5 + 0.4)} for i, w in enumerate("one two three four five".split())]
    grouped = cues(words, max_chars=9, max_seconds=5.0)
    assert [c["text"] for c in grouped] == ["one two", "three", "four five"]
    assert grouped[0]["timestamp"] == (0.0, 0.9)
    assert len(cues(words, max_chars=100, max_seconds=1.0)) == 3
    assert to_srt(grouped[:1]) == "1\n00:00:00,000 --> 00:00:00,900\none two\n\n"
    assert to_vtt(grouped[:1]) == "WEBVTT\n\n00:00:00.000 --> 00:00:00.900\none two\n\n"


def test_a_missing_file_is_named(trained_dir):
    with pytest.raises(ValueError, match="nowhere.wav"):
        main([str(trained_dir), "nowhere.wav"])
