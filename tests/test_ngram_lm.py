"""Word n-gram LMs: KenLM's estimator and queries, the n-gram scorer against hand-computed log-probabilities, the
CTC prefix search with the LM against a brute-force search, generate() / pipeline / saved settings."""

import itertools
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from transformers import pipeline

from conftest import TRANSCRIPTS, tiny_model
from speechseq import SpeechSeqForConditionalGeneration, SpeechSeqProcessor, train_tokenizer
from speechseq.generation_speechseq import NgramScorer, WordBonus, beam_search, ctc_prefix_beam_search
from speechseq.ngram_lm import WordLanguageModel, find_kenlm_program, train_ngram_lm, word_pieces

LN10 = math.log(10)

# A bigram LM whose every probability is written out, so that scores can be computed by hand (log10).
TOY_ARPA = """\\data\\
ngram 1=6
ngram 2=4

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.5
-0.5\t</s>\t0
-0.6\ta\t-0.3
-0.8\tab\t-0.2
-0.9\tb\t-0.1

\\2-grams:
-0.2\t<s> a
-0.4\ta ab
-0.3\tab </s>
-0.25\ta </s>

\\end\\
"""


@pytest.fixture(scope="module")
def toy_lm(tmp_path_factory):
    path = tmp_path_factory.mktemp("ngram") / "toy.arpa"
    path.write_text(TOY_ARPA)
    return WordLanguageModel(path)


@pytest.fixture(scope="module")
def char_tokenizer():
    return train_tokenizer(["a b ab z"], kind="char")


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False).input_ids


def total(scorer, token_ids, eos):
    """The scorer's total over a whole hypothesis, token by token, with the end token."""
    hypothesis, score = scorer.begin(), 0.0
    for token in [*token_ids, eos]:
        delta, _, hypothesis = scorer.extend(hypothesis, token)
        score += delta
    return score


def test_word_scores_equal_hand_computed_log_probabilities(toy_lm, char_tokenizer):
    eos = char_tokenizer.convert_tokens_to_ids("[EOS]")
    scorer = NgramScorer(toy_lm, word_pieces(char_tokenizer), eos, unk_penalty=-3.0)
    a, space, b = (char_tokenizer.convert_tokens_to_ids(c) for c in "a b")
    look_a, look_ab = math.log(10**-0.6 + 10**-0.8), math.log(10**-0.8)  # unigram mass of the words "a" and "ab" begin
    steps, hypothesis = [], scorer.begin()
    for token in (a, space, a, b, eos):
        delta, words, hypothesis = scorer.extend(hypothesis, token)
        steps.append((delta, words))
    expected = [
        (look_a, 0),  # inside a word: the look-ahead
        (-0.2 * LN10 - look_a, 1),  # " " completes "a": p(a | <s>) replaces the look-ahead
        (look_a, 0),
        (look_ab - look_a, 0),
        (-0.4 * LN10 - look_ab - 0.3 * LN10, 1),  # [EOS]: p(ab | a) and p(</s> | ab)
    ]
    assert [d for d, _ in steps] == pytest.approx([d for d, _ in expected])
    assert [n for _, n in steps] == [n for _, n in expected]
    # the total is the sentence's log-probability, as KenLM computes it
    assert sum(d for d, _ in steps) == pytest.approx(-0.9 * LN10)
    assert sum(d for d, _ in steps) == pytest.approx(toy_lm.model.score("a ab") * LN10)
    # a bigram the LM lacks backs off: p(b | a) = bo(a) p(b), then p(</s> | b) = bo(b) p(</s>)
    assert total(scorer, ids(char_tokenizer, "a b"), eos) == pytest.approx((-0.2 - 0.3 - 0.9 - 0.1 - 0.5) * LN10)


def test_unknown_words_cost_unk_probability_and_a_penalty_per_character(toy_lm, char_tokenizer):
    eos = char_tokenizer.convert_tokens_to_ids("[EOS]")
    scorer = NgramScorer(toy_lm, word_pieces(char_tokenizer), eos, unk_penalty=-3.0)
    assert [scorer.unknown_characters(w) for w in ("a", "ab", "abz", "z", "zz", "bz")] == [0, 0, 1, 1, 2, 1]
    # a spelling of no known word: ln p(<unk>) and the penalty per unknown character, growing as it goes on
    assert scorer.look_ahead("zz") == pytest.approx(-1.0 * LN10 - 6.0)
    assert scorer.look_ahead("zzz") < scorer.look_ahead("zz")
    # "a zz": p(a | <s>), p(<unk> | a) = bo(a) p(<unk>), 2 unknown characters, p(</s> | <unk>) = p(</s>)
    assert total(scorer, ids(char_tokenizer, "a zz"), eos) == pytest.approx((-0.2 - 0.3 - 1.0 - 0.5) * LN10 - 6.0)
    # special tokens (padding, the blank) change nothing
    pad = char_tokenizer.convert_tokens_to_ids("[PAD]")
    assert scorer.extend((toy_lm.begin(), "a"), pad)[0] == 0.0


def test_an_empty_word_is_forbidden(toy_lm, char_tokenizer):
    # two boundaries in a row (normalised text has none) cost -inf, in extend() and in the batched rows alike; a
    # boundary first, as a BPE hypothesis begins, is allowed
    eos = char_tokenizer.convert_tokens_to_ids("[EOS]")
    scorer = NgramScorer(toy_lm, word_pieces(char_tokenizer), eos)
    a, space = (char_tokenizer.convert_tokens_to_ids(c) for c in "a ")
    assert total(scorer, [a, space, space, a], eos) == -math.inf
    assert total(scorer, [space, a], eos) == pytest.approx(total(scorer, [a], eos))
    rows = torch.tensor([[3, a], [3, a], [3, space]])  # [SOS] a, [SOS] a, [SOS] " "
    state = scorer.init_state(rows[:, 0])
    state = scorer.select_state(scorer.score(rows[:, :1], state)[1], torch.arange(3), rows[:, 1])
    state = scorer.select_state(scorer.score(rows, state)[1], torch.tensor([0, 1, 2]), torch.tensor([space, a, a]))
    scores = scorer.score(torch.cat([rows, torch.tensor([[space], [a], [a]])], 1), state)[0]
    assert scores[0, space] == -math.inf  # "a " then " "
    assert scores[1, space] > -math.inf and scores[2, space] > -math.inf  # "aa " and " aa " end a word


def test_bpe_pieces_score_the_same_words(toy_lm):
    tokenizer = train_tokenizer(["a ab b", "ab a", "b ab"] * 5, kind="bpe", vocab_size=12)
    pieces = word_pieces(tokenizer)
    assert any(piece and piece[0] and piece[1] for piece in pieces), "no word-start piece in the BPE vocabulary"
    eos = tokenizer.convert_tokens_to_ids("[EOS]")
    scorer = NgramScorer(toy_lm, pieces, eos)
    assert total(scorer, ids(tokenizer, "a ab"), eos) == pytest.approx(-0.9 * LN10)
    # `▁` alone then a piece that starts a word: an empty word
    boundary, a = tokenizer.convert_tokens_to_ids(["▁", "a"])
    assert boundary != tokenizer.unk_token_id and not pieces[a][0]
    assert total(scorer, [boundary, *ids(tokenizer, "ab")], eos) == -math.inf
    # `▁` then a piece inside a word: the word `▁` begins
    assert total(scorer, [boundary, a], eos) == pytest.approx(total(scorer, ids(tokenizer, "a"), eos))


def test_batched_scores_equal_token_by_token_scores_in_a_real_search(toy_lm, char_tokenizer):
    """The search's n-gram totals (batched rows, beams reordered, utterances dropped) equal extend() over each
    returned sequence."""
    eos = char_tokenizer.convert_tokens_to_ids("[EOS]")
    pieces = word_pieces(char_tokenizer)
    model = tiny_model(char_tokenizer, seed=3, d_model=96, encoder_layers=3, decoder_layers=2)
    features = torch.randn(3, 90, 80)
    mask = torch.ones(3, 90, dtype=torch.long)
    mask[1, 60:] = 0
    out = model.generate(features, attention_mask=mask, num_beams=4, ctc_weight=0.3, num_return_sequences=2,
                         ngram_lm=toy_lm.path, ngram_weight=0.7, word_bonus=0.5, tokenizer=char_tokenizer,
                         max_new_tokens=12, return_dict_in_generate=True)  # fmt: skip
    scorer = NgramScorer(toy_lm, pieces, eos)
    bonus = WordBonus(pieces, eos)
    for sequence, ngram_total, words in zip(out.sequences, out.scorer_scores["ngram"], out.scorer_scores["word_bonus"]):
        tokens = [t for t in sequence.tolist()[1:] if t != char_tokenizer.pad_token_id]
        ended = tokens[-1] == eos
        tokens = tokens[:-1] if ended else tokens
        hypothesis, expected, completed = scorer.begin(), 0.0, 0
        for token in tokens + ([eos] if ended else []):
            delta, n, hypothesis = scorer.extend(hypothesis, token)
            expected, completed = expected + delta, completed + n
        assert float(ngram_total) == pytest.approx(expected, abs=1e-4)
        assert float(words) == completed
    assert bonus.score(torch.tensor([[0, ids(char_tokenizer, "a")[0]]]), None)[0][0, eos] == 1.0


def test_ngram_weight_zero_is_the_search_without_it(toy_lm, char_tokenizer):
    model = tiny_model(char_tokenizer, seed=1, d_model=96, encoder_layers=3, decoder_layers=2)
    features = torch.randn(2, 80, 80)
    options = dict(num_beams=4, ctc_weight=0.3, max_new_tokens=10)
    plain = model.generate(features, **options)
    zero = model.generate(features, ngram_lm=toy_lm.path, ngram_weight=0.0, tokenizer=char_tokenizer, **options)
    fused = model.generate(features, ngram_lm=toy_lm.path, ngram_weight=5.0, tokenizer=char_tokenizer, **options)
    assert torch.equal(plain, zero)
    assert not torch.equal(plain, fused), "a heavy n-gram weight changed nothing: the LM is not in the search"


def brute_force_best(log_probs, scorer, weight, word_bonus, labels, max_length):
    """The best label sequence by log p_ctc + weight * n-gram + word_bonus * words, over every sequence."""
    best, best_score = None, -math.inf
    T = log_probs.shape[0]
    for n in range(max_length + 1):
        for sequence in itertools.product(labels, repeat=n):
            if n:
                ctc = -F.ctc_loss(log_probs[:, None], torch.tensor([sequence]), torch.tensor([T]), torch.tensor([n]),
                                  blank=scorer.blank, reduction="sum", zero_infinity=False).item()  # fmt: skip
            else:
                ctc = log_probs[:, scorer.blank].sum().item()
            if ctc == -math.inf:
                continue
            hypothesis, lm, words = scorer.ngram.begin(), 0.0, 0
            for token in [*sequence, scorer.ngram.eos]:
                delta, completed, hypothesis = scorer.ngram.extend(hypothesis, token)
                lm, words = lm + delta, words + completed
            score = ctc + weight * lm + word_bonus * words
            if score > best_score:
                best, best_score = list(sequence), score
    return best, best_score


@pytest.mark.parametrize("seed", range(4))
def test_ctc_prefix_search_with_the_ngram_finds_the_brute_force_best(toy_lm, char_tokenizer, seed):
    eos = char_tokenizer.convert_tokens_to_ids("[EOS]")
    blank = char_tokenizer.convert_tokens_to_ids("[BLANK]")
    labels = [char_tokenizer.convert_tokens_to_ids(c) for c in "ab "]
    T, V = 5, len(char_tokenizer)
    generator = torch.Generator().manual_seed(seed)
    logits = torch.full((T, V), -30.0)
    logits[:, [blank, *labels]] = torch.randn(T, 4, generator=generator) * 2
    log_probs = logits.double().log_softmax(-1)

    scorer = NgramScorer(toy_lm, word_pieces(char_tokenizer), eos)
    scorer.blank, scorer.ngram = blank, scorer
    excluded = [i for i in range(V) if i not in (blank, *labels)]
    for weight, bonus in ((0.0, 0.0), (1.0, 0.5), (3.0, 0.0)):
        found, scores = ctc_prefix_beam_search(log_probs[None], torch.tensor([T]), 64, blank, excluded,
                                               ngram=scorer, ngram_weight=weight, word_bonus=bonus)  # fmt: skip
        best, best_score = brute_force_best(log_probs, scorer, weight, bonus, labels, T)
        assert scores[0][0] == pytest.approx(best_score, abs=1e-6), (weight, bonus)
        assert found[0][0] == best


def test_missing_or_malformed_lm_files_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="missing.arpa"):
        WordLanguageModel(tmp_path / "missing.arpa")
    (tmp_path / "words.txt").write_text("these are not n-grams\n")
    with pytest.raises(ValueError, match="words.txt"):
        WordLanguageModel(tmp_path / "words.txt")
    broken = tmp_path / "broken.arpa"
    broken.write_text(TOY_ARPA.replace("-0.4\ta ab", "-0.4\ta zz q"))  # an n-gram of the wrong order
    with pytest.raises(ValueError, match="broken.arpa"):
        WordLanguageModel(broken)
    binary = tmp_path / "lm.bin"
    binary.write_bytes(b"mmap lm http://kheafield.com/code format version 5\n\0\0")
    with pytest.raises(ValueError, match="lm.bin.vocab"):
        WordLanguageModel(binary)


def test_an_lm_spelled_otherwise_than_the_model_is_reported(tmp_path, char_tokenizer, toy_lm):
    upper = tmp_path / "upper.arpa"
    upper.write_text(TOY_ARPA.replace("\ta\t", "\tA\t").replace("\tab\t", "\tAB\t").replace("\tb\t", "\tB\t")
                     .replace("<s> a", "<s> A").replace("a ab", "A AB").replace("ab </s>", "AB </s>")
                     .replace("a </s>", "A </s>"))  # fmt: skip
    with pytest.raises(ValueError, match="never writes.*normalize_text"):
        WordLanguageModel(upper).check_spelling(word_pieces(char_tokenizer))
    toy_lm.check_spelling(word_pieces(char_tokenizer))  # the same words in lower case are fine


def test_train_ngram_lm_normalises_text_and_writes_arpa_and_binary(tmp_path):
    texts = ["Hello, World!", "hello there", "the world is round", "", "  "] * 3
    path = train_ngram_lm(texts, tmp_path / "lm" / "words.arpa", order=3, binary=True)
    lm = WordLanguageModel(path)
    assert lm.order == 3
    assert lm.words == {"hello", "world", "there", "the", "is", "round"}
    binary = WordLanguageModel(tmp_path / "lm" / "words.arpa.bin")
    assert binary.words == lm.words
    # modified Kneser-Ney: a seen continuation is likelier than an unseen one, and both models agree
    assert lm.model.score("hello world", eos=False) > lm.model.score("hello round", eos=False)
    assert binary.model.score("the world is round") == pytest.approx(lm.model.score("the world is round"), abs=1e-4)
    with pytest.raises(ValueError, match="no text"):
        train_ngram_lm(["", "!!"], tmp_path / "empty.arpa")
    assert find_kenlm_program("lmplz").endswith("lmplz")


@pytest.fixture
def ngram_model_dir(tmp_path, trained_dir):
    """The trained tiny model with a word LM of its transcripts saved as its decoding setting."""
    model_dir = tmp_path / "model"
    shutil.copytree(trained_dir, model_dir)
    train_ngram_lm(TRANSCRIPTS * 3 + ["hello there", "good morning world"], model_dir / "ngram_lm.arpa", order=3)
    model = SpeechSeqForConditionalGeneration.from_pretrained(model_dir)
    for name, value in dict(num_beams=4, ctc_weight=0.3, ngram_weight=1.0, word_bonus=0.5, ngram_lm="ngram_lm.arpa").items():
        setattr(model.generation_config, name, value)  # update() sets only the fields transformers knows
    model.generation_config.save_pretrained(model_dir)
    return model_dir


def test_a_saved_ngram_setting_survives_moving_and_saving_the_model(tmp_path, ngram_model_dir, processor, signals):
    moved = tmp_path / "elsewhere" / "model"
    shutil.move(ngram_model_dir, moved)
    model = SpeechSeqForConditionalGeneration.from_pretrained(moved).eval()
    assert model.generation_config.ngram_lm == "ngram_lm.arpa"
    batch = processor(audio=signals, sampling_rate=16000, return_tensors="pt")
    out = model.generate(batch["input_features"], attention_mask=batch["attention_mask"], return_dict_in_generate=True)
    assert "ngram" in out.scorer_scores
    assert processor.batch_decode(out.sequences, skip_special_tokens=True) == TRANSCRIPTS
    # save_pretrained takes the LM along
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    assert (saved / "ngram_lm.arpa").read_bytes() == (moved / "ngram_lm.arpa").read_bytes()
    # the ASR pipeline decodes with the saved setting
    asr = pipeline("automatic-speech-recognition", model=str(moved))
    assert [asr(signal)["text"] for signal in signals] == TRANSCRIPTS


def test_the_ngram_lm_in_ctc_decoding_of_a_trained_model(ngram_model_dir, processor, signals):
    model = SpeechSeqForConditionalGeneration.from_pretrained(ngram_model_dir).eval()
    batch = processor(audio=signals, sampling_rate=16000, return_tensors="pt")
    out = model.generate(batch["input_features"], attention_mask=batch["attention_mask"], decoding="ctc", num_beams=4)
    assert processor.batch_decode(out, skip_special_tokens=True) == TRANSCRIPTS
    with pytest.raises(ValueError, match="needs ngram_weight"):
        model.generate(batch["input_features"], decoding="ctc", num_beams=4, ngram_weight=0.0)


def test_ngram_options_are_checked(trained_dir, processor, signals):
    model = SpeechSeqForConditionalGeneration.from_pretrained(trained_dir).eval()
    batch = processor(audio=signals, sampling_rate=16000, return_tensors="pt")
    with pytest.raises(ValueError, match="ngram_lm"):
        model.generate(batch["input_features"], num_beams=2, ngram_weight=0.5)
    with pytest.raises(ValueError, match="unk_penalty"):
        model.generate(batch["input_features"], num_beams=2, ngram_lm="x.arpa", ngram_weight=0.5, unk_penalty=1.0)
    with pytest.raises(ValueError, match="does not exist"):
        model.generate(batch["input_features"], num_beams=2, ngram_lm="x.arpa", ngram_weight=0.5)


def test_the_pipeline_passes_ngram_options_through_generate_kwargs(trained_dir, ngram_model_dir, signals):
    asr = pipeline("automatic-speech-recognition", model=str(trained_dir))  # no n-gram in its generation config
    options = {"num_beams": 4, "ctc_weight": 0.3, "ngram_lm": str(ngram_model_dir / "ngram_lm.arpa"),
               "ngram_weight": 1.0}  # fmt: skip
    assert [asr(signal, generate_kwargs=options)["text"] for signal in signals] == TRANSCRIPTS
    with pytest.raises(ValueError, match="ngram_lm"):
        asr(signals[0], generate_kwargs={"num_beams": 4, "ngram_weight": 1.0})
