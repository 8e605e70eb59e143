"""bench/real_speech.py's readers of the real-speech sources, on small files in each source's own format."""

import gzip
import sys
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import real_speech  # noqa: E402


def write_wav(path: Path, rate: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.zeros(rate // 2, dtype=np.float32), rate)


def test_telephone_prompts_of_three_words_or_more_with_numbers_spelled(tmp_path):
    # core-sounds-en.txt's own lines: a comment, prompts, a tone, a missing recording, a silence, a note
    lines = ["; Core Asterisk Sounds in English", "", "agent-loggedoff: Agent Logged off.",
             "vm-undelete: Press 7 to undelete this message.", "beep: [this is a simple beep tone]",
             "auth-thankyou: Thank you.", "vm-missing: This one has no recording at all.",
             "silence/5: (5 seconds of silence)",
             "vm-intro: Please leave your message. (simple tone sound plays)"]  # fmt: skip
    with gzip.open(tmp_path / "core-sounds-en.txt.gz", "wt") as file:
        file.write("\n".join(lines) + "\n")
    for name in ("agent-loggedoff", "vm-undelete", "beep", "auth-thankyou", "silence/5", "vm-intro"):
        write_wav(tmp_path / "sounds" / f"{name}.wav")
    rows = real_speech.telephone(tmp_path / "sounds", tmp_path / "core-sounds-en.txt.gz")
    assert [(row["id"], row["text"]) for row in rows] == [
        ("agent-loggedoff", "agent logged off"), ("vm-undelete", "press seven to undelete this message"),
        ("vm-intro", "please leave your message")]  # fmt: skip


def test_sphinx_transcriptions_are_read_with_their_ids(tmp_path):
    (tmp_path / "librivox").mkdir()
    (tmp_path / "librivox" / "transcription").write_text(
        "<s> he was not an ill disposed young man </s> (sense-0880)\n<s> no recording </s> (sense-0890)\n")
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "cards.transcription").write_text("<s> ten of clubs  </s> (001)\n")
    write_wav(tmp_path / "librivox" / "sense-0880.wav", 16000)
    write_wav(tmp_path / "cards" / "001.wav", 16000)
    rows = real_speech.librivox(tmp_path)
    assert [(row["id"], row["text"]) for row in rows] == [
        ("sense-0880", "he was not an ill disposed young man"), ("001", "ten of clubs")]  # fmt: skip


def test_aligner_transcripts_with_disfluency_tags_are_left_out(tmp_path):
    (tmp_path / "conftest.py").write_text(
        '@pytest.fixture\ndef reference_transcripts():\n    return {\n'
        '        "mfa_putty": "m f a is like putty",\n'
        '        "mfa_cutoff": "<cutoff-montreal> montreal aligner",\n'
        '        "mfa_laughter": "[laughter] montreal",\n    }\n\n\n'
        'def other():\n    return {"x": "not a transcript"}\n')
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "multilingual_ipa_us.txt").write_text("uh with only like four games to go\n")
    (tmp_path / "lab" / "61-70968-0000.lab").write_text("HE BEGAN A CONFUSED COMPLAINT\n")
    for name in ("mfa_putty", "mfa_cutoff", "mfa_laughter", "multilingual_ipa_us", "61-70968-0000", "x"):
        write_wav(tmp_path / "wav" / f"{name}.flac", 16000)
    rows = real_speech.aligner(tmp_path)
    assert sorted((row["id"], row["text"]) for row in rows) == [
        ("61-70968-0000", "he began a confused complaint"), ("mfa_putty", "m f a is like putty"),
        ("multilingual_ipa_us", "uh with only like four games to go")]  # fmt: skip


def test_halves_are_fixed_by_source_and_id_and_share_every_source():
    rows = [{"source": source, "id": f"{source}-{i}"} for source in ("telephone", "aligner") for i in range(40)]
    halves = [real_speech.half(row) for row in rows]
    assert halves == [real_speech.half(dict(row)) for row in reversed(rows)][::-1]
    assert set(halves) == {"dev", "test"}
    for source in ("telephone", "aligner"):
        share = sum(h == "dev" for h, row in zip(halves, rows) if row["source"] == source) / 40
        assert 0.25 < share < 0.75
