"""Beam search, exactness first: against transformers' own searches, brute-force CTC sums and independent re-scoring."""

import itertools
import math
import re

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, DynamicCache, EncoderDecoderCache, GenerationMixin, pipeline

from speechseq import (
    SpeechSeqConfig,
    SpeechSeqForCausalLM,
    SpeechSeqForConditionalGeneration,
    SpeechSeqLMConfig,
    SpeechSeqProcessor,
    ctc_prefix_beam_search,
)
from speechseq.generation_speechseq import (
    CACHE_NAME,
    BeamSearchOptions,
    CTCPrefixScorer,
    DecoderScorer,
    LMScorer,
    Scorer,
    beam_search,
)

from conftest import TRANSCRIPTS, signals_dataset, tiny_model

BLANK, EOS = 0, 1  # in the synthetic CTC problems below: labels are 2..V-1


def features(lengths, seed=0):
    """Random filterbanks for utterances of the given frame counts, padded, with their mask."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), 80, generator=generator)
    mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).long()
    return x * mask[..., None], mask


def until_eos(sequence, eos):
    """A generated row up to and including its first end token (or all of it): padding conventions differ."""
    row = sequence.tolist()[1:]
    return row[: row.index(eos) + 1] if eos in row else row


def _small(seed):
    """A tiny random model over 12 tokens whose [EOS] output weights (tied to its embedding) are scaled up, so that
    [EOS] is often among the best candidates and hypotheses end at different lengths."""
    torch.manual_seed(seed)
    model = SpeechSeqForConditionalGeneration(SpeechSeqConfig.from_preset("tiny", vocab_size=12)).eval()
    with torch.no_grad():
        model.lm_head.weight[4] *= 4
    return model


# --- the decoder alone matches transformers ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_one_beam_with_the_decoder_alone_is_greedy(seed):
    model = _small(seed)
    x, mask = features([60, 44, 52], seed)
    options = BeamSearchOptions(num_beams=1, max_new_tokens=10, length_penalty=0.0)
    encoder, lengths = model.encode(x, mask)
    scorer = DecoderScorer(model, encoder, torch.arange(encoder.shape[1]) < lengths[:, None])
    ours = beam_search({"decoder": scorer}, {"decoder": 1.0}, 3, torch.full((3,), 10), options, 3, 4, 0, 12)
    greedy = GenerationMixin.generate(model, x, attention_mask=mask, max_new_tokens=10)
    assert [until_eos(s, 4) for s in ours.sequences] == [until_eos(s, 4) for s in greedy]


@torch.no_grad()
def argmax_loop(model, features, steps, history=True):
    """Greedy decoding written out for one unpadded utterance, no cache: at every step the whole prefix goes through
    the decoder (or, with `history=False`, only the last token, at position 0: what a lost cache gives), until [EOS]
    or `steps` tokens."""
    c = model.config
    ids = torch.tensor([[c.decoder_start_token_id]])
    for _ in range(steps):
        inputs = ids if history else ids[:, -1:]
        token = model(features, decoder_input_ids=inputs, use_cache=False).logits[:, -1].argmax(-1)
        ids = torch.cat([ids, token[:, None]], dim=1)
        if token.item() == c.eos_token_id:
            break
    return ids[0, 1:].tolist()


def assert_greedy_generate_is_argmax(model, x, mask, steps):
    """`generate()` with one beam (transformers' greedy search, through the model's cached forward) on a padded batch
    gives, for each utterance, what `argmax_loop` gives for it alone; and a decoder without its history would not."""
    generated = model.generate(x, attention_mask=mask, num_beams=1, max_new_tokens=steps)
    lengths = mask.sum(-1).tolist()
    expected = [argmax_loop(model, x[i : i + 1, :n], steps) for i, n in enumerate(lengths)]
    assert [until_eos(row, model.config.eos_token_id) for row in generated] == expected
    forgetful = [argmax_loop(model, x[i : i + 1, :n], steps, history=False) for i, n in enumerate(lengths)]
    assert forgetful != expected, "the outputs do not depend on the history: the test would miss a lost cache"
    return expected


@torch.no_grad()
def depend_on_history(model):
    """Random weights decode almost the same whatever came before (the token embedding dominates each position):
    a stronger self-attention makes every step depend on the earlier tokens, which a lost cache drops."""
    for layer in model.model.decoder.layers:
        layer.self_attn.out_proj.weight.mul_(8)
    return model


# The demo's shape (d_model 144, 6 encoder and 2 decoder layers), with both position embeddings, and the tiny preset.
DEMO_SHAPE = dict(d_model=144, encoder_layers=6, decoder_layers=2, encoder_ffn_dim=576, decoder_ffn_dim=576)


@pytest.mark.parametrize(
    "shape,position_embedding",
    [({}, "sinusoidal"), (DEMO_SHAPE, "rotary"), (DEMO_SHAPE, "sinusoidal")],
    ids=["tiny", "demo-rotary", "demo-sinusoidal"],
)
def test_greedy_generate_equals_an_argmax_loop_without_the_cache(shape, position_embedding):
    torch.manual_seed(0)
    config = SpeechSeqConfig.from_preset(
        "tiny", vocab_size=30, position_embedding=position_embedding, tie_word_embeddings=False, **shape
    )  # untied: with random weights, a tied output layer mostly predicts the token it was given, again and again
    model = depend_on_history(SpeechSeqForConditionalGeneration(config).eval())
    x, mask = features([90, 61, 77], seed=1)
    expected = assert_greedy_generate_is_argmax(model, x, mask, steps=12)
    assert sum(map(len, expected)) >= 20, "the outputs ended too soon to check the cache"


def test_greedy_generate_of_a_trained_model_equals_an_argmax_loop_without_the_cache(trained_dir, processor, signals):
    model = SpeechSeqForConditionalGeneration.from_pretrained(trained_dir).eval()
    batch = processor(audio=signals, sampling_rate=16000, return_tensors="pt")
    expected = assert_greedy_generate_is_argmax(model, batch["input_features"], batch["attention_mask"], steps=20)
    assert processor.batch_decode([row[:-1] for row in expected]) == TRANSCRIPTS


@pytest.mark.parametrize(
    "num_beams,length_penalty,early_stopping,repetition_penalty,num_return_sequences",
    [(4, 1.0, False, 1.0, 1), (5, 0.0, False, 1.0, 3), (3, 2.0, "never", 1.0, 2), (4, 1.0, True, 1.0, 4),
     (6, 0.5, False, 1.3, 2)],
)  # fmt: skip
def test_decoder_only_beam_search_equals_transformers(
    num_beams, length_penalty, early_stopping, repetition_penalty, num_return_sequences
):
    finished = 0
    for seed in range(3):
        model = _small(seed)
        x, mask = features([64, 48, 56], seed)
        kwargs = dict(attention_mask=mask, num_beams=num_beams, max_new_tokens=9, length_penalty=length_penalty,
                      early_stopping=early_stopping, repetition_penalty=repetition_penalty,
                      num_return_sequences=num_return_sequences, return_dict_in_generate=True)  # fmt: skip
        theirs = GenerationMixin.generate(model, x, **kwargs, output_scores=True)  # their sequences_scores need it
        ours = model.generate(x, **kwargs)
        assert [until_eos(s, 4) for s in ours.sequences] == [until_eos(s, 4) for s in theirs.sequences]
        torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, rtol=1e-5, atol=1e-5)
        finished += sum(4 in until_eos(s, 4) for s in ours.sequences)
    if length_penalty <= 1.0:  # (a strong length reward rightly keeps every beam going to the limit)
        assert finished, "no beam finished: the test would not check endings"


# each constraint made from the unconstrained transcripts (rows of token ids after [SOS]), so that it bites
CONSTRAINTS = {
    # the shortest transcript that ended: its [EOS] comes too early
    "min_new_tokens": lambda free: {"min_new_tokens": min([len(row) for row in free if row[-1] == 4] or [2])},
    "min_length": lambda free: {"min_length": 1 + min([len(row) for row in free if row[-1] == 4] or [2])},
    "suppress": lambda free: {"suppress_tokens": [free[0][0], free[1][0]]},
    "begin_suppress": lambda free: {"begin_suppress_tokens": sorted({row[0] for row in free})},
    "no_repeat_ngram": lambda free: {"no_repeat_ngram_size": 1},
    "bad_words": lambda free: {"bad_words_ids": [[free[0][0]], free[1][:2]]},
    "together": lambda free: {"min_new_tokens": 2, "suppress_tokens": [free[2][0]], "no_repeat_ngram_size": 2,
                              "bad_words_ids": [free[0][1:3]]},
}  # fmt: skip


@pytest.mark.parametrize("constraint", sorted(CONSTRAINTS))
def test_token_constraints_in_the_beam_search_act_as_transformers_logits_processors(constraint):
    changed = 0
    for seed in range(3):
        model = _small(seed)
        x, mask = features([64, 48, 56], seed)
        kwargs = dict(attention_mask=mask, num_beams=4, max_new_tokens=12, return_dict_in_generate=True)
        free = [until_eos(s, 4) for s in model.generate(x, **kwargs).sequences]
        options = CONSTRAINTS[constraint](free)
        theirs = GenerationMixin.generate(model, x, **kwargs, **options, output_scores=True)
        ours = model.generate(x, **kwargs, **options)
        assert [until_eos(s, 4) for s in ours.sequences] == [until_eos(s, 4) for s in theirs.sequences]
        torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, rtol=1e-5, atol=1e-5)
        changed += [until_eos(s, 4) for s in ours.sequences] != free
        # set in the generation config instead, as the pipeline and Seq2SeqTrainer find it: the same
        for name, value in options.items():
            setattr(model.generation_config, name, value)
        assert torch.equal(model.generate(x, **kwargs).sequences, ours.sequences)
    assert changed, "the constraint changed no transcript: the test would not check it"


def test_a_constraint_does_not_choose_the_tokens_ctc_scores_alone():
    # with ctc_weight=1 no scorer ranks tokens for CTC's pre-beam: CTC scores them all, and a constraint that only
    # forbids must not narrow them to the first few it allows
    for seed in range(3):
        model = _small(seed)
        x, mask = features([40, 36], seed)
        kwargs = dict(attention_mask=mask, num_beams=4, ctc_weight=1.0, max_new_tokens=8)
        free = model.generate(x, **kwargs)
        unused = sorted(set(range(5, 12)) - set(free.flatten().tolist()))
        assert torch.equal(model.generate(x, **kwargs, suppress_tokens=unused[:1] or [2]), free)


def test_options_speechseq_searches_cannot_honour_are_refused():
    model = _small(0)
    x, mask = features([64, 48], 0)
    for options in ({"num_beams": 3, "do_sample": True}, {"num_beams": 3, "output_scores": True},
                    {"num_beams": 3, "output_attentions": True, "return_dict_in_generate": True},
                    {"decoding": "ctc", "num_beams": 3, "min_new_tokens": 2}, {"decoding": "ctc", "suppress_tokens": [99]},
                    {"decoding": "ctc", "repetition_penalty": 1.2}, {"num_beams": 3, "suppress_tokens": [99]},
                    {"num_beams": 3, "min_new_tokens": 20, "max_new_tokens": 10}):  # fmt: skip
        with pytest.raises(ValueError):
            model.generate(x, attention_mask=mask, **options)
    model.generation_config.no_repeat_ngram_size = 2  # in the config: refused with the CTC head too, not dropped
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        model.generate(x, attention_mask=mask, decoding="ctc")


@pytest.mark.parametrize("num_beams", [1, 3])
def test_ctc_decoding_never_emits_suppressed_tokens(num_beams):
    # the two labels greedy CTC emits most, suppressed: neither comes out, and the transcripts change
    model = _small(0)
    x, mask = features([64, 48], 0)
    kwargs = dict(attention_mask=mask, decoding="ctc", num_beams=num_beams)
    free = model.generate(x, **kwargs)
    labels = [t for t in free.flatten().tolist() if t not in (0, 3, 4)]
    suppressed = sorted(set(labels), key=labels.count)[-2:]
    assert len(suppressed) == 2, "the random CTC head emits too few labels for the test"
    out = model.generate(x, **kwargs, suppress_tokens=suppressed)
    assert not set(out.flatten().tolist()) & set(suppressed)
    assert not torch.equal(out, free)
    model.generation_config.suppress_tokens = suppressed  # set in the generation config, as training saves it
    assert torch.equal(model.generate(x, **kwargs), out)


@pytest.mark.parametrize("shape", [(0, 64, 80), (64, 80), None], ids=["empty batch", "no batch axis", "none"])
def test_input_without_an_utterance_is_refused_with_its_shape(shape):
    model = _small(0)
    with pytest.raises(ValueError, match=re.escape(f"at least one utterance, got {None if shape is None else shape}")):
        model.generate(None if shape is None else torch.zeros(shape))


def test_temperature_is_ignored_without_sampling_as_in_transformers(caplog):
    model = _small(1)
    x, mask = features([64, 48], 1)
    beam = dict(attention_mask=mask, num_beams=3, max_new_tokens=8, return_dict_in_generate=True)
    plain = model.generate(x, **beam)
    with caplog.at_level("WARNING"):
        hot = model.generate(x, **beam, temperature=3.0)
    assert torch.equal(hot.sequences, plain.sequences) and torch.equal(hot.sequences_scores, plain.sequences_scores)
    assert "temperature is ignored" in caplog.text
    # transformers' greedy search: the same rule
    assert torch.equal(model.generate(x, attention_mask=mask, max_new_tokens=8, temperature=3.0),
                       model.generate(x, attention_mask=mask, max_new_tokens=8))  # fmt: skip


# --- CTC prefix scores ---------------------------------------------------------------------------------------------


def brute_force_ctc(log_probs, length):
    """{label sequence: log p(y | x)} by enumerating every alignment of `length` frames."""
    V = log_probs.shape[-1]
    totals = {}
    for path in itertools.product(range(V), repeat=length):
        if EOS in path:
            continue
        labels = tuple(c for i, c in enumerate(path) if c != BLANK and (i == 0 or c != path[i - 1]))
        p = math.exp(sum(log_probs[t, c].item() for t, c in enumerate(path)))
        totals[labels] = totals.get(labels, 0.0) + p
    return totals


def random_ctc(batch, frames, vocab, seed):
    logits = torch.randn(batch, frames, vocab, generator=torch.Generator().manual_seed(seed)) * 2
    logits[..., EOS] = -1e4  # CTC never emits the end token
    return logits.log_softmax(-1)


@pytest.mark.parametrize("seed", range(3))
def test_ctc_prefix_scores_equal_brute_force_sums(seed):
    log_probs, lengths = random_ctc(2, 6, 5, seed), torch.tensor([6, 4])  # the second utterance is padded
    scorer = CTCPrefixScorer(log_probs, lengths, BLANK, EOS)
    labels = [2, 3, 3, 4]
    candidates = torch.tensor([[2, 3, 4, EOS]]).repeat(2, 1)
    for u, length in enumerate(lengths.tolist()):
        totals = brute_force_ctc(log_probs[u], length)
        state = scorer.init_state(torch.tensor([u]))
        accumulated = 0.0
        for step in range(len(labels) + 1):
            prefix = tuple(labels[:step])
            scores, new = scorer.score_partial(None, candidates[:1], state)
            for column, c in enumerate(candidates[0].tolist()):
                if c == EOS:  # the prefix as a whole transcript
                    expected = totals.get(prefix, 0.0)
                else:  # every transcript that begins with prefix + c
                    expected = sum(p for y, p in totals.items() if y[: step + 1] == prefix + (c,))
                got = accumulated + scores[0, column].item()
                assert got == pytest.approx(math.log(expected), rel=1e-6, abs=1e-6) if expected > 0 else got == float("-inf")
            if step == len(labels):
                break
            accumulated += scores[0, candidates[0].tolist().index(labels[step])].item()
            state = scorer.select_state(new, torch.tensor([0]), torch.tensor([labels[step]]))


def test_ctc_alone_finds_the_most_likely_transcript_both_ways():
    for seed in range(4):
        log_probs, lengths = random_ctc(2, 5, 5, seed), torch.tensor([5, 4])
        K = 60  # more than all prefixes of 3 labels over 5 frames: both searches are exhaustive
        sequences, scores = ctc_prefix_beam_search(log_probs, lengths, K, BLANK, (EOS,), num_return_sequences=3)
        scorer = CTCPrefixScorer(log_probs, lengths, BLANK, EOS)
        options = BeamSearchOptions(num_beams=K, num_return_sequences=3, length_penalty=0.0, max_new_tokens=6)
        label_sync = beam_search({"ctc": scorer}, {"ctc": 1.0}, 2, lengths + 1, options, -1, EOS, BLANK, 5)
        for u, length in enumerate(lengths.tolist()):
            totals = brute_force_ctc(log_probs[u], length)
            best = sorted(totals, key=totals.get, reverse=True)[:3]
            assert [tuple(y) for y in sequences[u]] == best
            assert scores[u] == pytest.approx([math.log(totals[y]) for y in best], rel=1e-6)
            rows = label_sync.sequences[u * 3 : u * 3 + 3]
            assert [tuple(until_eos(r, EOS)[:-1]) for r in rows] == best
            torch.testing.assert_close(label_sync.sequences_scores[u * 3 : u * 3 + 3],
                                       torch.tensor([math.log(totals[y]) for y in best]))  # fmt: skip


def test_the_ctc_prefix_scorer_in_a_memory_budget_scores_the_same():
    # a budget of one byte scores one candidate at a time (ctc_weight=1 scores the whole vocabulary: with BPE 10k and
    # 30 s that was gigabytes a step); the kept prefixes' alignments are recomputed rather than kept for all
    for seed in range(3):
        log_probs, lengths = random_ctc(2, 9, 7, seed), torch.tensor([9, 6])
        options = BeamSearchOptions(num_beams=4, num_return_sequences=2, length_penalty=0.0, max_new_tokens=8)
        outputs = [beam_search({"ctc": CTCPrefixScorer(log_probs, lengths, BLANK, EOS, memory_budget=budget)},
                               {"ctc": 1.0}, 2, lengths + 1, options, -1, EOS, BLANK, 7)
                   for budget in (1, 2**30)]  # fmt: skip
        assert torch.equal(outputs[0].sequences, outputs[1].sequences)
        torch.testing.assert_close(outputs[0].sequences_scores, outputs[1].sequences_scores)


@pytest.mark.parametrize("seed", range(4))
def test_model_ctc_weight_one_equals_ctc_prefix_beam_search_and_scores_are_ctc_likelihoods(seed):
    model = _small(seed)
    x, mask = features([22, 19], seed)  # 4 encoder frames: a beam of 64 keeps nearly every prefix
    ours = model.generate(x, attention_mask=mask, num_beams=64, ctc_weight=1.0, length_penalty=0.0,
                          return_dict_in_generate=True)  # fmt: skip
    frame_sync = model.generate(x, attention_mask=mask, num_beams=64, decoding="ctc", return_dict_in_generate=True)
    assert [until_eos(s, 4) for s in ours.sequences] == [until_eos(s, 4) for s in frame_sync.sequences]
    encoder, lengths = model.encode(x, mask)
    log_probs = model.ctc_log_probs(encoder)
    for u, row in enumerate(ours.sequences):
        labels = torch.tensor(until_eos(row, 4)[:-1])
        nll = F.ctc_loss(log_probs[u : u + 1].transpose(0, 1), labels[None], lengths[u : u + 1],
                         torch.tensor([len(labels)]), blank=5, reduction="sum")  # fmt: skip
        assert ours.sequences_scores[u].item() == pytest.approx(-nll.item(), rel=1e-5)
        # frame by frame, a prefix pruned at one frame and found again later has lost some alignments
        assert frame_sync.sequences_scores[u].item() <= -nll.item() + 1e-5


# --- fusion --------------------------------------------------------------------------------------------------------


def tiny_lm(vocab_size=12, seed=1, **overrides):
    torch.manual_seed(seed)
    return SpeechSeqForCausalLM(SpeechSeqLMConfig.from_preset("tiny", vocab_size=vocab_size, **overrides)).eval()


def rescore(model, lm, x, mask, row, u):
    """Each scorer's total for one finished hypothesis, computed without the search: teacher-forced decoder and LM,
    and the CTC forward algorithm."""
    tokens = torch.tensor([row.tolist()[: row.tolist().index(4) + 1]])
    with torch.no_grad():
        out = model(x[u : u + 1, : int(mask[u].sum())], decoder_input_ids=tokens[:, :-1])
        decoder = out.logits.log_softmax(-1).gather(2, tokens[:, 1:, None]).sum().item()
        lm_score = lm(tokens[:, :-1]).logits.log_softmax(-1).gather(2, tokens[:, 1:, None]).sum().item()
        log_probs = model.ctc_log_probs(out.encoder_last_hidden_state)
        labels = tokens[:, 1:-1]
        ctc = -F.ctc_loss(log_probs.transpose(0, 1), labels, torch.tensor([log_probs.shape[1]]),
                          torch.tensor([labels.shape[1]]), blank=5, reduction="sum").item()  # fmt: skip
    return {"decoder": decoder, "ctc": ctc, "lm": lm_score, "length_bonus": tokens.shape[1] - 1}


@pytest.mark.parametrize("seed", range(3))
def test_fused_scores_equal_independent_rescoring(seed):
    model, lm = _small(seed), tiny_lm(seed=seed + 10)
    x, mask = features([40, 28], seed)
    weights = {"ctc_weight": 0.4, "lm_weight": 0.7, "length_bonus": 0.5}
    out = model.generate(x, attention_mask=mask, num_beams=4, num_return_sequences=4, lm=lm, length_penalty=0.0,
                         return_dict_in_generate=True, **weights)  # fmt: skip
    checked = 0
    for i, row in enumerate(out.sequences):
        if 4 not in row.tolist()[1:]:
            continue  # cut at the length limit: its CTC score is a prefix score
        expected = rescore(model, lm, x, mask, row, i // 4)
        for name, value in expected.items():
            assert out.scorer_scores[name][i].item() == pytest.approx(value, rel=1e-4, abs=1e-4)
        fused = (1 - 0.4) * expected["decoder"] + 0.4 * expected["ctc"] + 0.7 * expected["lm"] + 0.5 * expected[
            "length_bonus"]
        assert out.sequences_scores[i].item() == pytest.approx(fused, rel=1e-4, abs=1e-4)
        checked += 1
    assert checked >= 4


def test_zero_lm_weight_is_no_lm():
    model, lm = _small(0), tiny_lm()
    x, mask = features([48, 40], 0)
    common = dict(attention_mask=mask, num_beams=4, ctc_weight=0.3, return_dict_in_generate=True)
    without = model.generate(x, **common)
    with_zero = model.generate(x, lm=lm, lm_weight=0.0, **common)
    assert torch.equal(without.sequences, with_zero.sequences)
    assert torch.equal(without.sequences_scores, with_zero.sequences_scores)
    assert "lm" not in with_zero.scorer_scores
    with_lm = model.generate(x, lm=lm, lm_weight=2.0, **common)
    assert not torch.equal(with_lm.sequences_scores, without.sequences_scores)


def test_a_batch_equals_one_utterance_at_a_time():
    model, lm = _small(3), tiny_lm()
    lengths = [64, 36, 50]
    x, mask = features(lengths, 3)
    kwargs = dict(num_beams=5, ctc_weight=0.3, lm=lm, lm_weight=0.3, length_bonus=0.2, return_dict_in_generate=True)
    batch = model.generate(x, attention_mask=mask, **kwargs)
    for u, length in enumerate(lengths):
        alone = model.generate(x[u : u + 1, :length], **kwargs)
        assert until_eos(batch.sequences[u], 4) == until_eos(alone.sequences[0], 4)
        torch.testing.assert_close(batch.sequences_scores[u], alone.sequences_scores[0], rtol=1e-5, atol=1e-5)


class UncachedDecoder(Scorer):
    """The reference: the whole hypothesis through the decoder at every step, no cache."""

    def __init__(self, model, encoder, mask):
        self.model, self.encoder, self.mask = model, encoder, mask

    def init_state(self, utterances):
        return utterances

    def score(self, tokens, state):
        hidden = self.model.model.decoder(tokens, encoder_hidden_states=self.encoder[state],
                                          encoder_attention_mask=self.mask[state]).last_hidden_state  # fmt: skip
        return self.model.lm_head(hidden[:, -1]).log_softmax(-1), state

    def select_state(self, state, rows, tokens):
        return state[rows]


class UncachedLM(Scorer):
    def __init__(self, lm):
        self.lm = lm

    def score(self, tokens, state):
        return self.lm(tokens, use_cache=False).logits[:, -1].log_softmax(-1), state


@torch.no_grad()
def test_cached_scorers_equal_uncached():
    model, lm = _small(4), tiny_lm()
    x, mask = features([56, 40], 4)
    encoder, lengths = model.encode(x, mask)
    enc_mask = torch.arange(encoder.shape[1]) < lengths[:, None]
    options = BeamSearchOptions(num_beams=4, num_return_sequences=2, max_new_tokens=12)
    weights = {"decoder": 1.0, "lm": 0.5}

    def run(decoder, language_model):
        return beam_search({"decoder": decoder, "lm": language_model}, weights, 2, lengths + 1, options, 3, 4, 0, 12)

    cached = run(DecoderScorer(model, encoder, enc_mask), LMScorer(lm))
    uncached = run(UncachedDecoder(model, encoder, enc_mask), UncachedLM(lm))
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(cached.sequences_scores, uncached.sequences_scores, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_beams_sharing_one_copy_of_the_encoder_states_equal_one_copy_per_beam():
    model = _small(5)
    encoder, lengths = model.encode(*features([30, 21], 5))
    mask = torch.arange(encoder.shape[1]) < lengths[:, None]
    tokens = torch.randint(5, 12, (2 * 3, 4), generator=torch.Generator().manual_seed(5))  # 3 beams per utterance

    def steps(encoder_states, encoder_mask):
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        return torch.stack([model.decoder_step(tokens[:, t : t + 1], encoder_states, encoder_mask, cache)
                            for t in range(tokens.shape[1])])  # fmt: skip

    shared = steps(encoder, mask)  # 2 rows of encoder states for 6 rows of tokens
    repeated = steps(encoder.repeat_interleave(3, 0), mask.repeat_interleave(3, 0))
    torch.testing.assert_close(shared, repeated)
    assert not torch.allclose(shared[:, :3], shared[:, 3:])  # and the two utterances do differ


def test_a_mismatched_language_model_raises_saying_what_differs():
    model, x = _small(0), features([40], 0)[0]
    with pytest.raises(ValueError, match="vocabulary size 13 != the ASR model's 12"):
        model.generate(x, num_beams=2, lm=tiny_lm(vocab_size=13), lm_weight=0.5)
    with pytest.raises(ValueError, match="eos_token_id 5 != the ASR model's eos_token_id 4"):
        model.generate(x, num_beams=2, lm=tiny_lm(eos_token_id=5), lm_weight=0.5)
    with pytest.raises(ValueError, match="lm_weight > 0 needs a language model"):
        model.generate(x, num_beams=2, lm_weight=0.5)


def test_options_are_checked():
    with pytest.raises(ValueError, match="num_return_sequences"):
        BeamSearchOptions(num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="ctc_weight"):
        BeamSearchOptions(ctc_weight=1.5)
    with pytest.raises(ValueError, match="does not use"):
        _small(0).generate(features([40], 0)[0], num_beams=2, top_k=5)


# --- the language model --------------------------------------------------------------------------------------------


def test_language_model_saves_loads_and_caches(tmp_path):
    lm = tiny_lm(vocab_size=20)
    lm.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, SpeechSeqForCausalLM)
    ids = torch.tensor([[3, 7, 8, 9, 10, 4]])
    with torch.no_grad():
        full = loaded(ids, use_cache=False).logits
        torch.testing.assert_close(full, lm(ids).logits)
        for name in ("cache", "past_key_values"):  # transformers' name since 5.24, and the one before
            first = loaded(ids[:, :3], use_cache=True)
            step = loaded(ids[:, 3:], **{name: getattr(first, CACHE_NAME)}, use_cache=True).logits
            torch.testing.assert_close(step, full[:, 3:], rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="given twice"):
            loaded(ids[:, 3:], cache=DynamicCache(), past_key_values=DynamicCache())
        out = loaded(ids, labels=ids)
    manual = F.cross_entropy(full[0, :-1], ids[0, 1:])
    assert out.loss.item() == pytest.approx(manual.item(), rel=1e-5)
    assert torch.equal(loaded.lm_head.weight, loaded.model.embed_tokens.weight)


@torch.no_grad()
def test_language_model_greedy_generate_equals_an_argmax_loop_without_the_cache():
    lm = tiny_lm(vocab_size=30, d_model=96, decoder_layers=3, position_embedding="rotary", tie_word_embeddings=False)
    for layer in lm.model.layers:  # so that each step depends on the earlier tokens (see depend_on_history)
        layer.self_attn.out_proj.weight.mul_(8)
    prompt = torch.tensor([[3, 7, 8]])
    generated = lm.generate(prompt, max_new_tokens=10, min_new_tokens=10, do_sample=False)

    def argmax_loop(history):
        ids = prompt
        for _ in range(10):
            logits = lm(ids if history else ids[:, -1:], use_cache=False).logits[:, -1]
            logits[:, lm.config.eos_token_id] = float("-inf")  # as min_new_tokens does
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
        return ids.tolist()

    assert generated.tolist() == argmax_loop(history=True)
    assert argmax_loop(history=False) != argmax_loop(history=True), "the test would miss a lost cache"


# --- through transformers' callers ---------------------------------------------------------------------------------


def test_pipeline_passes_fusion_arguments(trained_dir, signals, tokenizer, tmp_path):
    lm = tiny_lm(vocab_size=len(tokenizer))
    lm.save_pretrained(tmp_path / "lm")
    asr = pipeline("automatic-speech-recognition", model=str(trained_dir))
    options = {"num_beams": 4, "ctc_weight": 0.3, "lm": str(tmp_path / "lm"), "lm_weight": 0.2, "length_bonus": 0.1}
    assert [asr(s, generate_kwargs=options)["text"] for s in signals] == TRANSCRIPTS
    model = SpeechSeqForConditionalGeneration.from_pretrained(trained_dir).eval()
    processor = SpeechSeqProcessor.from_pretrained(trained_dir)
    batch = processor(audio=signals[:1], sampling_rate=16000, return_tensors="pt")
    # the same call the pipeline made: a huge LM weight changes the transcript, so the LM was really used
    heavy = {**options, "lm_weight": 50.0}
    direct = processor.batch_decode(model.generate(**batch, **heavy), skip_special_tokens=True)
    assert asr(signals[0], generate_kwargs=heavy)["text"] == direct[0] != TRANSCRIPTS[0]


def test_generation_config_options_are_saved_and_used(trained_dir, signals, tmp_path):
    model = SpeechSeqForConditionalGeneration.from_pretrained(trained_dir).eval()
    processor = SpeechSeqProcessor.from_pretrained(trained_dir)
    batch = processor(audio=signals, sampling_rate=16000, return_tensors="pt")
    explicit = model.generate(**batch, num_beams=3, ctc_weight=0.5, return_dict_in_generate=True)
    model.generation_config.num_beams, model.generation_config.ctc_weight = 3, 0.5
    model.save_pretrained(tmp_path)
    loaded = SpeechSeqForConditionalGeneration.from_pretrained(tmp_path).eval()
    implicit = loaded.generate(**batch, return_dict_in_generate=True)
    assert torch.equal(explicit.sequences, implicit.sequences)
    assert set(implicit.scorer_scores) == {"decoder", "ctc"}


def test_seq2seq_trainer_predicts_with_our_beam_search(trained_dir, signals, tmp_path):
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

    from speechseq.data import SpeechSeqDataCollator

    model = SpeechSeqForConditionalGeneration.from_pretrained(trained_dir).eval()
    processor = SpeechSeqProcessor.from_pretrained(trained_dir)
    dataset = signals_dataset(signals)
    model.generation_config.ctc_weight = 0.5
    args = Seq2SeqTrainingArguments(tmp_path, predict_with_generate=True, generation_num_beams=3, report_to=[],
                                     per_device_eval_batch_size=2, use_cpu=True, remove_unused_columns=False)  # fmt: skip
    trainer = Seq2SeqTrainer(model=model, args=args, data_collator=SpeechSeqDataCollator(processor),
                             processing_class=processor)  # fmt: skip
    predictions = trainer.predict(dataset).predictions
    predictions[predictions == -100] = 0
    assert processor.batch_decode(predictions, skip_special_tokens=True) == TRANSCRIPTS
    calls = []
    original = model._joint_search
    model._joint_search = lambda *a, **k: calls.append(a[2]) or original(*a, **k)
    trainer.predict(dataset)
    assert calls and calls[0].num_beams == 3 and calls[0].ctc_weight == 0.5


@pytest.mark.parametrize("options", [{}, {"num_beams": 3, "ctc_weight": 0.3}, {"decoding": "ctc"}],
                         ids=["greedy", "beam", "ctc"])  # fmt: skip
def test_a_transcript_cut_at_the_length_limit_is_reported(tokenizer, caplog, options):
    import logging

    model = tiny_model(tokenizer, seed=0)
    features = torch.randn(3, 100, 80)
    with caplog.at_level(logging.WARNING, logger="speechseq.modeling_speechseq"):
        out = model.generate(features, max_new_tokens=2, **options)
    assert out.shape[1] <= 3  # the start token and at most 2 new ones
    cut = [i for i, row in enumerate(out.tolist()) if model.config.eos_token_id not in row]
    assert cut, "no transcript reached the limit: the test does not test"
    assert f"transcripts {cut} of this batch reached the limit of 2 new tokens" in caplog.text
    if options.get("decoding") == "ctc":  # CTC emits at most a label a frame: within the frame bound, never cut
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="speechseq.modeling_speechseq"):
            model.generate(features, **options)
        assert "reached the limit" not in caplog.text


def test_greedy_search_on_a_model_that_saved_a_max_length_keeps_the_console_quiet(tokenizer, caplog):
    """`speechseq-train` saves `generation_config.max_length`; transformers warns for every batch when a call then
    sets `max_new_tokens` too (the demo's console had 26 such lines). The caps still hold: the saved max_length
    and the audio's frame bound."""
    import logging

    model = tiny_model(tokenizer, seed=0)
    model.generation_config.max_length = 448
    features = torch.randn(2, 100, 80)
    frames = int(model._get_feat_extract_output_lengths(torch.tensor(100)))
    with caplog.at_level(logging.WARNING):
        out = model.generate(features)
        assert out.shape[1] <= frames + 2  # the start token, a token a frame, [EOS]
        model.generation_config.max_length = 4
        assert model.generate(features).shape[1] <= 4
        assert model.generate(features, max_new_tokens=2).shape[1] <= 3
        model.generation_config.max_new_tokens = 2  # a saved max_new_tokens wins over a saved max_length
        assert model.generate(features).shape[1] <= 3
    assert "seem to have been set" not in caplog.text


# --- several processes ---------------------------------------------------------------------------------------------


def _synced_generation(rank: int, port: int, results: str, synced: bool):
    """One of two processes: its own batch (process 0 short utterances, done in a few steps; process 1 long ones),
    and a collective operation in every decoder forward, as FSDP's and ZeRO-3's parameter gathering has."""
    import datetime

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=20))  # fmt: skip
    model = _small(0)
    model.model.decoder.register_forward_pre_hook(lambda module, args: dist.all_reduce(torch.ones(1)))
    x, mask = features([24, 20] if rank == 0 else [200, 180], rank)
    try:
        out = model.generate(x, attention_mask=mask, num_beams=3, ctc_weight=0.3, max_new_tokens=30,
                             synced_gpus=synced)  # fmt: skip
        torch.save(out, f"{results}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_synced_gpus_keeps_processes_stepping_until_all_are_done(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_synced_generation, args=(port, str(tmp_path), True), nprocs=2, join=True)
    model = _small(0)
    for rank, lengths in ((0, [24, 20]), (1, [200, 180])):
        x, mask = features(lengths, rank)
        alone = model.generate(x, attention_mask=mask, num_beams=3, ctc_weight=0.3, max_new_tokens=30)
        assert torch.equal(torch.load(tmp_path / f"{rank}.pt"), alone)  # the same transcripts as one process alone
    # the steps really differ: process 0 stops within 6 tokens (5 encoder frames and [EOS]), process 1 goes on
    assert torch.load(tmp_path / "0.pt").shape[1] <= 7 < torch.load(tmp_path / "1.pt").shape[1]
