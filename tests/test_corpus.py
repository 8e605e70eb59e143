"""The TTS corpus builder, on about 20 utterances spoken by the real engines."""

import json

import numpy as np
import pytest

from speechseq import load_audio
from speechseq.data.corpus import available_engines, build_corpus, unseen_voices
from speechseq.data.text_sources import corpus_sentences, fortune_sentences, wordnet_examples

from test_tokenization_speechseq import SENTENCES

MORE = [
    "The small pup gnawed a hole in the sock.", "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.", "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.", "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.", "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.", "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.", "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.", "Wipe the grease off his dirty face.",
]  # fmt: skip  (Harvard sentences, lists 2 and 3)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    engines = available_engines()
    if set(engines) != {"espeak", "flite", "piper"}:
        pytest.skip(f"needs espeak-ng, flite and piper; found {engines} (make test installs them)")
    path = tmp_path_factory.mktemp("corpus")
    build_corpus(path, hours=0.005, eval_utterances=3, seed=1, workers=2, sentences=SENTENCES + MORE,
                 assignment_layout=True)  # fmt: skip
    return path


def test_splits_sentences_and_voices(corpus_dir):
    corpus = build_corpus(corpus_dir, hours=0.005, eval_utterances=3, seed=1, sentences=SENTENCES + MORE)
    assert list(corpus) == ["train", "dev", "test_seen", "test_unseen"]
    assert [len(corpus[s]) for s in ("dev", "test_seen", "test_unseen")] == [3, 3, 3]
    assert 2 <= len(corpus["train"]) <= 10
    texts = {split: set(list(ds["text"])) for split, ds in corpus.items()}
    for a in texts:
        for b in texts:
            assert a == b or not texts[a] & texts[b], f"{a} and {b} share sentences"
    unseen_ids = {v.id for v in unseen_voices()}
    train_voices = set(corpus["train"]["voice"]) | set(corpus["dev"]["voice"]) | set(corpus["test_seen"]["voice"])
    assert not train_voices & unseen_ids
    assert set(corpus["test_unseen"]["voice"]) <= unseen_ids
    assert set(corpus["test_unseen"]["engine"]) == {"espeak", "flite", "piper"}


def test_audio_is_16k_mono_flac_of_the_stated_duration(corpus_dir):
    corpus = build_corpus(corpus_dir, hours=0.005, eval_utterances=3, seed=1, sentences=SENTENCES + MORE)
    for row in corpus["test_unseen"]:
        assert row["audio"]["bytes"][:4] == b"fLaC"
        audio = load_audio(row["audio"]["bytes"])
        assert abs(len(audio) / 16000 - row["duration"]) < 1e-3
        assert 0.5 < row["duration"] < 10 and np.abs(audio).max() > 0.05  # speech, not silence


def test_reuse_and_mismatched_settings(corpus_dir, tmp_path):
    manifest = json.loads((corpus_dir / "corpus.json").read_text())
    assert manifest["failures"] == 0
    before = (corpus_dir / "corpus.json").stat().st_mtime_ns
    build_corpus(corpus_dir, hours=0.005, eval_utterances=3, seed=1, sentences=SENTENCES + MORE)
    assert (corpus_dir / "corpus.json").stat().st_mtime_ns == before  # reused, not rebuilt
    with pytest.raises(ValueError, match="holds a corpus built with"):
        build_corpus(corpus_dir, hours=0.005, eval_utterances=3, seed=2, sentences=SENTENCES + MORE)


def test_the_same_seed_builds_the_same_corpus(corpus_dir, tmp_path):
    a = build_corpus(corpus_dir, hours=0.005, eval_utterances=3, seed=1, sentences=SENTENCES + MORE)
    b = build_corpus(tmp_path / "again", hours=0.005, eval_utterances=3, seed=1, sentences=SENTENCES + MORE)
    for split in a:
        assert list(a[split]["text"]) == list(b[split]["text"])
        assert list(a[split]["voice"]) == list(b[split]["voice"])
        for x, y in zip(a[split], b[split]):
            if x["engine"] != "piper":  # piper samples its noise without a seed; espeak-ng and flite repeat exactly
                assert x["audio"]["bytes"] == y["audio"]["bytes"]


def test_assignment_layout(corpus_dir):
    root = corpus_dir / "assignment"
    for folder, has_text in (("train-clean-100", True), ("dev-clean", True), ("test-clean", False)):
        fbanks = sorted((root / folder / "fbank").glob("*.npy"))
        assert fbanks
        features = np.load(fbanks[0])
        assert features.dtype == np.float32 and features.shape[0] == 80 and features.shape[1] > 50
        assert (root / folder / "text").exists() == has_text
        if has_text:
            text = np.load(root / folder / "text" / fbanks[0].name)
            assert text.dtype.kind == "U" and all(len(c) == 1 for c in text)


@pytest.mark.skipif(not (fortune_sentences.__defaults__[0] / "fortunes").exists(), reason="fortunes not installed")
def test_debian_text_sources_are_clean_and_normalised():
    fortunes, wordnet = list(fortune_sentences()), list(wordnet_examples())
    assert len(fortunes) > 10000 and len(wordnet) > 10000
    sentences = corpus_sentences()
    assert len(sentences) == len(set(sentences))
    for sentence in sentences[:: max(1, len(sentences) // 2000)]:
        assert set(sentence) <= set("abcdefghijklmnopqrstuvwxyz' ")
        assert 3 <= len(sentence.split()) <= 24
    # initials do not end sentences ("Robert H. Goddard"), attributions are dropped ('" - H. L. Mencken')
    assert any("robert h goddard launched" in s for s in fortunes)
    assert any(s.endswith("it will also make better soup") for s in fortunes)


def test_without_debian_text_the_standard_library_docstrings_stand_in(monkeypatch, tmp_path, caplog):
    import speechseq.data.text_sources as text_sources

    monkeypatch.setattr(text_sources, "FORTUNES_DIR", tmp_path / "none")
    monkeypatch.setattr(text_sources.fortune_sentences, "__defaults__", (tmp_path / "none",))
    monkeypatch.setattr(text_sources.wordnet_examples, "__defaults__", (tmp_path / "none",))
    sentences = text_sources.corpus_sentences()
    assert len(sentences) > 2000 and "docstrings" in caplog.text
    assert all(set(s) <= set("abcdefghijklmnopqrstuvwxyz' ") for s in sentences)


def test_king_james_references_are_stripped_from_verses():
    from speechseq.data.text_sources import VERSE_REFERENCE

    lines = ["Ge1:1 In the beginning God created the heaven and the earth.", "1Sm1:1 Now there was a certain man",
             "SSol1:1 The song of songs, which is Solomon's.", "Gen 1:1 In the beginning"]  # fmt: skip
    assert [VERSE_REFERENCE.sub("", line) for line in lines] == [
        "In the beginning God created the heaven and the earth.", "Now there was a certain man",
        "The song of songs, which is Solomon's.", "In the beginning"]  # fmt: skip
