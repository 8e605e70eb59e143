"""Beam search for speechseq: joint CTC/attention decoding with shallow fusion of a language model.

The search knows nothing of layers (as Whisper's `decoding.py` and ESPnet's `beam_search.py`). It drives *scorers*
that share one interface, and ranks hypotheses by the weighted sum of their scores:

    score(y) = (1 - ctc_weight) log p_att(y|x) + ctc_weight log p_ctc(y|x) + lm_weight log p_lm(y) + length_bonus |y|
               + ngram_weight log p_ngram(words(y)) + word_bonus |words(y)|

(Watanabe et al., 2017, "Hybrid CTC/attention architecture for end-to-end speech recognition"; Kannan et al., 2018,
"An analysis of incorporating an external language model into a sequence-to-sequence model"). A new fusion method is
a new scorer, never a new copy of the search loop.

Everything is batched over rows = utterances x beams. The hypotheses' bookkeeping follows transformers' own beam
search (`GenerationMixin._beam_search`), so that with the decoder alone the two return the same sequences and scores.

One flat module, not a package: `save_pretrained` copies a model's code for `trust_remote_code` by following
`from .module import` lines to sibling files only.
"""

import logging
import math
import os
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, GenerationConfig, GenerationMixin
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.generation.utils import GenerateBeamEncoderDecoderOutput
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.distributed.fsdp import is_fsdp_managed_module
from transformers.modeling_outputs import Seq2SeqLMOutput

from .feature_extraction_speechseq import STD_FLOOR
from .ngram_lm import WordLanguageModel, word_pieces
from .tokenization_speechseq import load_tokenizer

logger = logging.getLogger(__name__)

__all__ = [
    "SpeechSeqGenerationMixin",
    "SpeechSeqGenerateOutput",
    "BeamSearchOptions",
    "BeamSearchOutput",
    "Scorer",
    "PartialScorer",
    "DecoderScorer",
    "CTCPrefixScorer",
    "LMScorer",
    "LengthBonus",
    "NgramScorer",
    "WordBonus",
    "TokenConstraints",
    "beam_search",
    "ctc_prefix_beam_search",
    "ctc_forced_align",
    "timestamp_chunks",
    "silence_segments",
    "trim_pauses",
    "check_fusion_lm",
    "CACHE_NAME",
]


def lengths_to_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_length) bool, True on real positions."""
    return torch.arange(max_length, device=lengths.device) < lengths[:, None]


def frame_lengths(input_features: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.LongTensor:
    """Real input frames of each utterance: from the frame-level mask, or all frames when there is none."""
    if attention_mask is None:
        return torch.full(input_features.shape[:1], input_features.shape[1], device=input_features.device)
    return attention_mask.sum(-1).long()


# transformers 5.24 renamed the key/value cache of model forwards and of their outputs from `past_key_values` to
# `cache` (its own models: `@deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")`). GenerationMixin passes
# and reads the installed version's name; speechseq's models and scorers use the same one.
CACHE_NAME = "cache" if "cache" in Seq2SeqLMOutput.__dataclass_fields__ else "past_key_values"

NEG_INF = float("-inf")
# transformers marks impossible beams with -1e9 rather than -inf, so that sums stay finite and comparable.
_FINISHED = -1.0e9
# Long recordings are decoded in segments of at most this many seconds: about the longest sentences the models here
# learnt (the demo corpus's longest training utterance is 10.3 s). Segments of 20 s, several sentences each, cost
# the demo's from-scratch model 17-18 WER points against one by one with its saved decoding, 10 s 3-8 (README, long
# recordings)
SEGMENT_SECONDS = 10.0


@dataclass(frozen=True)
class BeamSearchOptions:
    """What the search does; `SpeechSeqForConditionalGeneration.generate` fills it from its keyword arguments and the
    model's `generation_config` (same names where transformers has the option)."""

    num_beams: int = 10  # hypotheses kept per utterance
    num_return_sequences: int = 1  # n-best list per utterance, at most num_beams
    ctc_weight: float = 0.0  # weight of the CTC prefix score; the attention decoder gets 1 - ctc_weight
    lm_weight: float = 0.0  # weight of the external language model's log-probabilities (shallow fusion)
    length_bonus: float = 0.0  # added per emitted token (the end token included): counters the bias to short outputs
    length_penalty: float = 1.0  # finished scores are divided by length ** length_penalty (transformers' meaning)
    early_stopping: bool | str = False  # transformers' meaning: True, False (its heuristic) or "never"
    repetition_penalty: float = 1.0  # on the decoder's log-probs of tokens already in the hypothesis (transformers')
    max_new_tokens: int = 447  # longest output; each utterance is also capped at its number of encoder frames
    pre_beam_ratio: float = 1.5  # partial scorers (CTC) score only the best pre_beam_ratio * num_beams tokens
    ngram_weight: float = 0.0  # weight of the word n-gram LM's log-probabilities (`NgramScorer`)
    unk_penalty: float = -3.0  # n-gram score of each character spelled outside the n-gram LM's words
    word_bonus: float = 0.0  # added per completed word: counters the n-gram's bias to few, long words

    def __post_init__(self):
        _verify_options(self)

    @property
    def pre_beam_size(self) -> int:
        return int(self.pre_beam_ratio * self.num_beams)


def _verify_options(options: BeamSearchOptions):
    if not isinstance(options.num_beams, int) or options.num_beams < 1:
        raise ValueError(f"num_beams must be a positive integer, got {options.num_beams!r}")
    if not 1 <= options.num_return_sequences <= options.num_beams:
        raise ValueError(
            f"num_return_sequences must be between 1 and num_beams={options.num_beams}, "
            f"got {options.num_return_sequences!r}"
        )
    if not 0.0 <= options.ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1], got {options.ctc_weight!r}")
    if options.lm_weight < 0:
        raise ValueError(f"lm_weight must be >= 0, got {options.lm_weight!r}")
    if options.ngram_weight < 0:
        raise ValueError(f"ngram_weight must be >= 0, got {options.ngram_weight!r}")
    if options.unk_penalty > 0:
        raise ValueError(f"unk_penalty must be <= 0 (a cost), got {options.unk_penalty!r}")
    if options.repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {options.repetition_penalty!r}")
    if options.early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {options.early_stopping!r}")
    if not isinstance(options.max_new_tokens, int) or options.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {options.max_new_tokens!r}")
    if options.pre_beam_ratio < 1.0:
        raise ValueError(f"pre_beam_ratio must be >= 1, got {options.pre_beam_ratio!r}")


# ---------------------------------------------------------------------------------------------------------------------
# Scorers


class Scorer:
    """A source of next-token scores, batched over rows (utterance x beam).

    `init_state(utterances)` makes the state of rows holding the empty hypothesis of the given utterances;
    `score(tokens, state)` gives (rows, vocab) log-scores of every next token and the state after reading `tokens`;
    `select_state(state, rows, tokens)` keeps the rows the search chose (in that order) after they appended `tokens`.
    """

    # True for a scorer that cannot pick the pre-beam of the partial scorers alone: it gives every token the same score
    # (or only forbids some).
    constant = False

    def init_state(self, utterances: torch.LongTensor):
        return None

    def score(self, tokens: torch.LongTensor, state) -> tuple[torch.Tensor, object]:
        raise NotImplementedError

    def select_state(self, state, rows: torch.LongTensor, tokens: torch.LongTensor):
        return state

    def keep_in_step(self) -> None:
        """Run this scorer's model once more, its output unused: with `synced_gpus`, a process whose utterances are
        done keeps joining the collective operations (FSDP, DeepSpeed ZeRO-3) of the steps the others still take."""


class PartialScorer(Scorer):
    """A scorer too costly for the whole vocabulary: `score_partial` scores only the (rows, P) `candidates` that the
    full scorers pre-selected, returning (rows, P) log-scores and the state for each candidate."""

    def score_partial(self, tokens: torch.LongTensor, candidates: torch.LongTensor, state) -> tuple[torch.Tensor, object]:
        raise NotImplementedError


@dataclass
class _DecoderState:
    utterances: torch.LongTensor  # (rows,) utterance of each row, in groups of `beams` consecutive rows
    beams: int
    cache: EncoderDecoderCache  # its cross-attention part holds one row per group
    encoder_hidden_states: torch.Tensor  # (groups, frames, d_model)
    encoder_mask: torch.Tensor | None  # (groups, frames) bool; None without padding


class DecoderScorer(Scorer):
    """log p_att(token | hypothesis, audio) from the model's attention decoder, with its key/value cache.

    `model` exposes `decoder_step(input_ids, encoder_hidden_states, encoder_attention_mask, cache)`
    returning the last position's logits. When the rows come as equal groups of consecutive rows per utterance (the
    beams), the encoder's states and their projected keys and values are kept once per utterance, not once per beam.
    """

    def __init__(self, model, encoder_hidden_states, encoder_mask, repetition_penalty=1.0):
        self.model, self.repetition_penalty = model, repetition_penalty
        self.encoder_hidden_states, self.encoder_mask = encoder_hidden_states, encoder_mask

    def init_state(self, utterances):
        groups, counts = torch.unique_consecutive(utterances, return_counts=True)
        beams = int(counts[0])
        if not (counts == beams).all() or torch.unique(groups).numel() != groups.numel():
            groups, beams = utterances, 1  # rows in no regular grouping: one copy per row
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        return _DecoderState(utterances, beams, cache, self.encoder_hidden_states[groups], _rows(self.encoder_mask, groups))

    def score(self, tokens, state):
        self._first = (tokens[:1, :1], state.encoder_hidden_states[:1], _rows(state.encoder_mask, slice(0, 1)))
        # Only the newest token goes in: the cache holds the others (and the encoder's projected keys and values).
        step = tokens if state.cache.get_seq_length() == 0 else tokens[:, -1:]
        logits = self.model.decoder_step(step, state.encoder_hidden_states, state.encoder_mask, state.cache)
        log_probs = logits.float().log_softmax(dim=-1)
        if self.repetition_penalty != 1.0:  # as transformers' RepetitionPenaltyLogitsProcessor, applied to log-probs
            seen = log_probs.gather(1, tokens)
            seen = torch.where(seen < 0, seen * self.repetition_penalty, seen / self.repetition_penalty)
            log_probs = log_probs.scatter(1, tokens, seen)
        return log_probs, state

    def keep_in_step(self):
        tokens, encoder_hidden_states, encoder_mask = self._first
        self.model.decoder_step(tokens, encoder_hidden_states, encoder_mask, None)

    def select_state(self, state, rows, tokens):
        utterances = state.utterances[rows]
        if torch.equal(utterances, state.utterances):
            # Beams moved within their utterances: the encoder's keys and values are the same for all of them.
            state.cache.self_attention_cache.reorder_cache(rows)
            return state
        # Utterances left the batch, whole groups at a time (the search drops finished utterances).
        groups = rows.view(-1, state.beams)[:, 0] // state.beams
        state.cache.self_attention_cache.reorder_cache(rows)
        state.cache.cross_attention_cache.reorder_cache(groups)
        return _DecoderState(utterances, state.beams, state.cache, state.encoder_hidden_states[groups],
                             _rows(state.encoder_mask, groups))  # fmt: skip


def _rows(mask: torch.Tensor | None, rows: torch.LongTensor) -> torch.Tensor | None:
    return None if mask is None else mask[rows]


@dataclass
class _LMState:
    cache: DynamicCache


class LMScorer(Scorer):
    """log p_lm(token | hypothesis) from a causal language model (any `AutoModelForCausalLM` sharing the ASR model's
    vocabulary), with its own key/value cache reordered with the beams."""

    def __init__(self, lm):
        self.lm = lm

    def init_state(self, utterances):
        return _LMState(DynamicCache())

    def score(self, tokens, state):
        self._first = tokens[:1, :1]
        step = tokens if state.cache.get_seq_length() == 0 else tokens[:, -1:]
        logits = self.lm(input_ids=step, **{CACHE_NAME: state.cache}, use_cache=True).logits[:, -1]
        return logits.float().log_softmax(dim=-1), state

    def select_state(self, state, rows, tokens):
        state.cache.reorder_cache(rows)
        return state

    def keep_in_step(self):
        self.lm(input_ids=self._first, use_cache=False)


class LengthBonus(Scorer):
    """+1 for every token: with a positive weight, a reward for length that balances the per-token log-prob cost."""

    constant = True

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def score(self, tokens, state):
        return torch.ones(tokens.shape[0], self.vocab_size, device=tokens.device), state


@dataclass
class _NgramState:
    contexts: list  # per row, the n-gram LM's state after the row's completed words
    partials: list  # per row, the word being spelled ("" right after a word boundary, None before any token)
    after: list | None = None  # after score(): per row, the LM state once the partial word is completed


class NgramScorer(Scorer):
    """ln p(words) from a word n-gram LM, for hypotheses of characters or BPE pieces (word-level shallow fusion, as
    pyctcdecode's and ESPnet's word LMs), with a unigram look-ahead inside words.

    A word is paid for as it is spelled, not only when it ends: a partial word scores the look-ahead ln of the
    unigram probability of all the words it begins (0 for nothing spelled), so each character costs what it narrows
    the choice of words by (the LM look-ahead of WFST decoders; Hori et al., 2018, do the same with a word RNN LM). A
    token that starts a word (a space, a `▁` piece) or `[EOS]` completes the word and swaps its look-ahead for its
    real probability given the words before (`[EOS]` adds `</s>` too). A spelling of no known word scores ln
    p(<unk>), and each character past its longest prefix of a known word `unk_penalty` more, kept when the word
    completes (KenLM's `<unk>` probability then): out-of-vocabulary words stay possible but cost by their length.
    Without a cost while a word is spelled, a beam search with a length bonus runs on in one endless unknown word
    instead of paying for real ones. An empty word (a word boundary right after another: two spaces, or `▁` then a
    `▁word` piece) is forbidden: normalised text has none, and free boundaries would otherwise fill a narrow beam
    with runs of spaces, each worth a length bonus and no LM cost.

    The total over a finished hypothesis: the LM's log-probability of its words and `</s>`, plus `unk_penalty` per
    character spelled outside the LM's vocabulary.

    Args:
        lm: a [`~speechseq.ngram_lm.WordLanguageModel`] (`begin`, `score_word`, `score_end`, `words`, `prefixes`,
            `unk_unigram`).
        pieces (`list`): per token id, `None` (special token) or `(starts_word, text)` (`ngram_lm.word_pieces`).
        eos_token_id (`int`): the end token.
        unk_penalty (`float`, defaults to -3): the cost of a character outside the LM's words, in natural log units.
    """

    def __init__(self, lm, pieces: list, eos_token_id: int, unk_penalty: float = -3.0):
        self.lm, self.pieces, self.eos, self.unk_penalty = lm, pieces, eos_token_id, unk_penalty
        self.starts = torch.tensor([piece is not None and piece[0] for piece in pieces])
        self._rows: dict[str, torch.Tensor] = {}  # partial word -> (vocab,) score of each token but the word's own
        self._unknown: dict[str, int] = {}

    def unknown_characters(self, partial: str) -> int:
        """Characters of `partial` past its longest prefix of a known word."""
        if partial not in self._unknown:
            known = len(partial)
            while known and partial[:known] not in self.lm.prefixes:
                known -= 1
            self._unknown[partial] = len(partial) - known
        return self._unknown[partial]

    def begin(self) -> tuple:
        """The hypothesis before any token: `(LM state, partial word)`, the partial word `None` (no boundary yet)."""
        return self.lm.begin(), None

    def look_ahead(self, partial: str | None) -> float:
        """The provisional score of a partial word."""
        if not partial:
            return 0.0
        if partial in self.lm.prefixes:
            return self.lm.prefixes[partial]
        return self.lm.unk_unigram + self.unknown_characters(partial) * self.unk_penalty

    def complete(self, context, partial: str | None):
        """(score, LM state after it) of `partial` completed as a word: ln p(partial | context), and `unk_penalty`
        per unknown character; nothing to complete scores 0."""
        if not partial:
            return 0.0, context
        score, after = self.lm.score_word(context, partial)
        return score + self.unknown_characters(partial) * self.unk_penalty, after

    def extend(self, hypothesis: tuple, token: int) -> tuple[float, int, tuple]:
        """One hypothesis `(LM state, partial word)` (from `begin`) extended by `token`: (score, words completed,
        new hypothesis)."""
        context, partial = hypothesis
        piece = self.pieces[token]
        if piece is None and token != self.eos:
            return 0.0, 0, hypothesis
        score, after = self.complete(context, partial)
        if token == self.eos:
            return score - self.look_ahead(partial) + self.lm.score_end(after), int(bool(partial)), (after, "")
        starts, text = piece
        if starts:
            if partial == "":
                return NEG_INF, 0, (after, text)
            return score - self.look_ahead(partial) + self.look_ahead(text), int(bool(partial)), (after, text)
        spelled = (partial or "") + text
        return self.look_ahead(spelled) - self.look_ahead(partial), 0, (context, spelled)

    def init_state(self, utterances):
        rows = utterances.shape[0]
        context, partial = self.begin()
        return _NgramState([context] * rows, [partial] * rows)

    def _row(self, partial: str | None) -> torch.Tensor:
        """Each token's score after `partial`, but for the completed word's own score (added per row)."""
        if partial not in self._rows:
            old = self.look_ahead(partial)
            self._rows[partial] = torch.tensor([self._step(partial, old, piece) for piece in self.pieces])
        return self._rows[partial]

    def _step(self, partial: str | None, old: float, piece) -> float:
        """One token's score after `partial` (of look-ahead `old`), but for the completed word's own score."""
        if piece is None:
            return 0.0
        starts, text = piece
        if not starts:
            return self.look_ahead((partial or "") + text) - old
        return NEG_INF if partial == "" else self.look_ahead(text) - old

    def score(self, tokens, state):
        completed, after, end = [], [], []
        for context, partial in zip(state.contexts, state.partials):
            score, context_after = self.complete(context, partial)
            completed.append(score)
            after.append(context_after)
            end.append(score - self.look_ahead(partial) + self.lm.score_end(context_after))
        scores = torch.stack([self._row(partial) for partial in state.partials]).to(tokens.device)
        starts = self.starts.to(tokens.device)
        scores = scores + starts[None] * torch.tensor(completed, device=tokens.device)[:, None]
        scores[:, self.eos] = torch.tensor(end, device=tokens.device)
        state.after = after
        return scores, state

    def select_state(self, state, rows, tokens):
        rows = rows.tolist()
        if state.after is None:  # rows only (the search dropping finished utterances)
            return _NgramState([state.contexts[r] for r in rows], [state.partials[r] for r in rows])
        contexts, partials = [], []
        for r, token in zip(rows, tokens.tolist()):
            piece = self.pieces[token]
            if token == self.eos or (piece is not None and piece[0]):
                contexts.append(state.after[r])
                partials.append("" if piece is None else piece[1])
            else:
                contexts.append(state.contexts[r])
                partials.append(state.partials[r] if piece is None else (state.partials[r] or "") + piece[1])
        return _NgramState(contexts, partials)


class WordBonus(Scorer):
    """+1 for each word a token completes (a word-starting token or `[EOS]` after a token with text): with
    `word_bonus` as its weight, the word insertion bonus of n-gram decoding (pyctcdecode's beta)."""

    def __init__(self, pieces: list, eos_token_id: int):
        self.has_text = torch.tensor([piece is not None and piece[1] != "" for piece in pieces])
        self.ends = torch.tensor([piece is not None and piece[0] for piece in pieces])
        self.ends[eos_token_id] = True

    def score(self, tokens, state):
        has_text, ends = self.has_text.to(tokens.device), self.ends.to(tokens.device)
        return (has_text[tokens[:, -1]][:, None] & ends[None]).float(), state


class TokenConstraints(Scorer):
    """transformers' token constraints for speechseq's beam search, as one scorer of weight 1 that gives 0 to allowed
    tokens and -inf to forbidden ones (each as its logits processor does, on the hypothesis so far, `[SOS]` first):
    `min_length` / `min_new_tokens` (no `[EOS]` before), `suppress_tokens` (never), `begin_suppress_tokens` (not
    first), `no_repeat_ngram_size` (no n-gram twice) and `bad_words_ids` (no such token sequence)."""

    constant = True  # it only forbids: it cannot pick the pre-beam of the partial scorers alone

    def __init__(self, vocab_size: int, eos_token_id: int, min_length: int = 0, min_new_tokens: int = 0,
                 suppress_tokens=None, begin_suppress_tokens=None, no_repeat_ngram_size: int = 0,
                 bad_words_ids=None):  # fmt: skip
        self.vocab_size, self.eos_token_id = vocab_size, eos_token_id
        self.min_length, self.min_new_tokens = min_length or 0, min_new_tokens or 0
        self.suppress, self.begin_suppress = list(suppress_tokens or []), list(begin_suppress_tokens or [])
        self.no_repeat_ngram_size = no_repeat_ngram_size or 0
        self.bad_words = [list(words) for words in bad_words_ids or [] if list(words) != [eos_token_id]]
        for name, ids in (("suppress_tokens", self.suppress), ("begin_suppress_tokens", self.begin_suppress),
                          ("bad_words_ids", [t for words in self.bad_words for t in words])):  # fmt: skip
            if any(not 0 <= t < vocab_size for t in ids):
                raise ValueError(f"{name} has token ids outside the vocabulary of {vocab_size}: {ids}")
        if any(not words for words in self.bad_words):
            raise ValueError("bad_words_ids has an empty sequence")

    @property
    def active(self) -> bool:
        return bool(self.min_length > 1 or self.min_new_tokens or self.suppress or self.begin_suppress
                    or self.no_repeat_ngram_size or self.bad_words)  # fmt: skip

    def score(self, tokens, state):
        rows, length = tokens.shape
        allowed = torch.ones(rows, self.vocab_size, dtype=torch.bool, device=tokens.device)
        if length < self.min_length or length - 1 < self.min_new_tokens:
            allowed[:, self.eos_token_id] = False
        allowed[:, self.suppress] = False
        if length == 1:
            allowed[:, self.begin_suppress] = False
        n = self.no_repeat_ngram_size
        if self.bad_words or (n and length >= n):
            for row, hypothesis in enumerate(tokens.tolist()):
                if n and length >= n:  # every n-gram seen: its last token may not follow its first n - 1 again
                    tail = hypothesis[length - n + 1 :]
                    banned = [hypothesis[i + n - 1] for i in range(length - n + 1) if hypothesis[i : i + n - 1] == tail]
                    allowed[row, banned] = False
                for words in self.bad_words:
                    if len(words) == 1 or hypothesis[len(hypothesis) - len(words) + 1 :] == words[:-1]:
                        allowed[row, words[-1]] = False
        return torch.zeros(rows, self.vocab_size, device=tokens.device).masked_fill(~allowed, NEG_INF), state


@dataclass
class _CTCState:
    utterances: torch.LongTensor  # (rows,)
    r: torch.Tensor  # (frames, 2, rows): log-prob of the prefix's alignments up to each frame, ending in a blank (0)
    # or in its last label (1)
    prefix: torch.Tensor  # (rows,) log-prob of all alignments that begin with the prefix: log p_ctc(prefix... | x)
    last: torch.LongTensor  # (rows,) last label of the prefix, -1 for the empty one
    labels: int = 0  # labels in the prefix (the same for every row: the search is label-synchronous)
    candidates: torch.LongTensor | None = None  # after score_partial: (rows, P), and prefix (rows, P)
    # after score_partial: the alignments of every prefix + candidate (frames, 2, rows, P), or None when they were
    # too many to keep (recomputed for the kept ones)
    extended: torch.Tensor | None = None


class CTCPrefixScorer(PartialScorer):
    """CTC prefix scores (Watanabe et al., 2017; ESPnet's `CTCPrefixScoreTH`): for hypothesis g and token c,
    log p_ctc(g c ... | x) - log p_ctc(g ... | x), and for the end token log p_ctc(g | x) - log p_ctc(g ... | x),
    so that a finished hypothesis has collected exactly its CTC log-likelihood.

    Vectorised over rows x candidates; the forward recursion runs frame by frame, from the first frame the new label
    can occupy (a prefix of n labels needs n frames) to the last real frame of the longest utterance among the rows,
    in float32 as ESPnet (log space keeps it exact enough).

    Args:
        log_probs (`torch.Tensor` of shape `(batch, frames, vocab)`): CTC log-probabilities.
        lengths (`torch.LongTensor` of shape `(batch,)`): real frames of each utterance.
        blank_token_id, eos_token_id: the CTC blank and the end token.
        excluded_token_ids: tokens CTC never emits (padding, start): scored -inf.
    """

    def __init__(self, log_probs, lengths, blank_token_id, eos_token_id, excluded_token_ids=(),
                 memory_budget: int = 256 * 2**20):  # fmt: skip
        self.memory_budget = memory_budget  # bytes of working tensors a step may take
        self.x = log_probs.float().transpose(0, 1).contiguous()  # (frames, batch, vocab)
        self.lengths, self.blank, self.eos = lengths, blank_token_id, eos_token_id
        self.banned = torch.tensor(sorted({blank_token_id, *excluded_token_ids}), device=log_probs.device)

    def init_state(self, utterances):
        T, rows = self.x.shape[0], utterances.shape[0]
        r = torch.full((T, 2, rows), NEG_INF, device=self.x.device)
        r[:, 0] = self.x[:, utterances, self.blank].cumsum(0)  # the empty prefix: blanks only
        zeros = torch.zeros(rows, device=self.x.device)
        return _CTCState(utterances, r, zeros, torch.full((rows,), -1, device=self.x.device))

    def score_partial(self, tokens, candidates, state):
        T, (rows, P) = self.x.shape[0], candidates.shape
        # the recursion's working tensors hold about 8 x (frames, rows, candidates) floats: when they do not fit the
        # budget (the whole vocabulary, with no full scorer to pre-select, took gigabytes with a 10k BPE vocabulary
        # and 30 s of audio), candidates go in chunks and the new prefixes' alignments are recomputed in select_state
        # for the tokens the search keeps, rather than kept for every candidate
        chunk = max(1, self.memory_budget // (8 * 4 * T * rows))
        if chunk >= P:
            prefix, r = self._extend(state, candidates)
        else:
            prefix = torch.cat([self._extend(state, candidates[:, i : i + chunk])[0] for i in range(0, P, chunk)], 1)
            r = None
        prefix = torch.where(candidates == self.eos, self._complete(state)[:, None], prefix)
        prefix = prefix.masked_fill(torch.isin(candidates, self.banned), NEG_INF)
        # A prefix CTC cannot align stays impossible (-inf, not -inf - -inf = nan, which topk would rank first).
        scores = (prefix - state.prefix[:, None]).masked_fill(state.prefix[:, None] == NEG_INF, NEG_INF).float()
        return scores, _CTCState(state.utterances, state.r, prefix, state.last, state.labels, candidates, r)

    def _complete(self, state) -> torch.Tensor:
        """(rows,) log p_ctc(g | x): every alignment of the whole prefix g, ending at the last real frame."""
        last_frame = (self.lengths[state.utterances] - 1)[None, None, :].expand(1, 2, -1)
        return torch.logsumexp(state.r.gather(0, last_frame)[0], dim=0)

    def _extend(self, state, candidates) -> tuple[torch.Tensor, torch.Tensor]:
        """For each row's prefix g and each of its (rows, C) `candidates` c: log p_ctc(g c ... | x) and the
        alignments of g c up to each frame, `r` (frames, 2, rows, C)."""
        T, (rows, P) = self.x.shape[0], candidates.shape
        utterances = state.utterances
        lengths = self.lengths[utterances]
        xc = self.x[:, utterances[:, None], candidates]  # (T, rows, P): only the candidates' columns, never (T, rows, V)
        r_b, r_n = state.r[:, 0, :, None], state.r[:, 1, :, None]  # (T, rows, 1)
        # phi[t]: the prefix is complete at frame t and may be followed by c; after a repeat of its last label only
        # through a blank.
        repeat = (candidates == state.last[:, None])[None]  # (1, rows, P)
        phi = torch.where(repeat, r_b, torch.logaddexp(r_n, r_b))  # (T, rows, P)

        # The new prefix's r[t] = (logaddexp(r_n[t-1], r_b[t-1]) + x[t, blank], logaddexp(r_n[t-1], phi[t-1]) + x[t, c]),
        # from z[t] = (r_b, phi, r_n): two operations a frame, and the new r is the view z[:, ::2].
        z = torch.full((T, 3, rows, P), NEG_INF, device=xc.device)
        z[:, 1] = phi
        if state.labels == 0:
            z[0, 2] = xc[0]  # the first label at the first frame
        x = torch.stack([self.x[:, utterances, self.blank][..., None].expand(T, rows, P), xc], dim=1)  # (T, 2, rows, P)
        end = int(lengths.max())  # frames from here on belong to no row's utterance
        pair = torch.empty(2, rows, P, device=xc.device)
        # per-frame views made once: slicing inside the loop costs as much as the arithmetic
        label_ends, pairs, outs, xs = z[:, 2:].unbind(0), z[:, :2].unbind(0), z[:, ::2].unbind(0), x.unbind(0)
        for t in range(max(state.labels, 1), end):
            torch.logaddexp(label_ends[t - 1], pairs[t - 1], out=pair)
            torch.add(pair, xs[t], out=outs[t])

        # The prefix g c ...: c first emitted at some real frame t >= labels (g needs the frames before), anything
        # after; phi[-1] is log 1 for the empty prefix.
        first = state.labels
        phi_before = phi[first - 1 : end - 1] if first else torch.cat([torch.zeros_like(phi[:1]), phi[: end - 1]])
        real = torch.arange(first, end, device=xc.device)[:, None] < lengths[None]  # (frames, rows)
        prefix = torch.logsumexp((phi_before + xc[first:end]).masked_fill(~real[..., None], NEG_INF), dim=0)
        return prefix, z[:, ::2]

    def select_state(self, state, rows, tokens):
        parent = _CTCState(state.utterances[rows], state.r[:, :, rows], state.prefix[rows], state.last[rows],
                           state.labels)  # fmt: skip
        if state.candidates is None:  # rows only (the search dropping finished utterances)
            return parent
        column = (state.candidates[rows] == tokens[:, None]).int().argmax(dim=1)  # where each kept token was scored
        if state.extended is not None:
            r = state.extended[:, :, rows, column]  # (T, 2, kept)
        else:
            r = self._extend(parent, tokens[:, None])[1][..., 0]  # the kept prefixes' alignments, recomputed
        return _CTCState(parent.utterances, r, state.prefix[rows, column], tokens, state.labels + 1)


# ---------------------------------------------------------------------------------------------------------------------
# The search


@dataclass
class BeamSearchOutput:
    """`sequences` (utterances x num_return_sequences, length): start token, tokens, end token (unless cut at the
    length limit), then padding; `sequences_scores`: their fused scores (length-normalised as the options say);
    `scorer_scores`: each scorer's own, unweighted, total score of each sequence, to see why it won."""

    sequences: torch.LongTensor
    sequences_scores: torch.Tensor
    scorer_scores: dict[str, torch.Tensor] = field(default_factory=dict)


class _FinishedHypotheses:
    """The pool of finished hypotheses: for each utterance its best `size` (score, tokens, each scorer's total),
    best first."""

    def __init__(self, num_utterances: int, size: int):
        self.size = size
        self.pools: list[list[tuple[float, list[int], torch.Tensor]]] = [[] for _ in range(num_utterances)]

    def add(self, utterance: int, score: float, sequence: list[int], parts: torch.Tensor) -> None:
        pool = self.pools[utterance]
        pool.append((score, sequence, parts))
        pool.sort(key=lambda hypothesis: -hypothesis[0])
        del pool[self.size :]

    def is_full(self, utterance: int) -> bool:
        return len(self.pools[utterance]) == self.size

    def worst_score(self, utterance: int) -> float:
        return self.pools[utterance][-1][0]

    def output(self, num_return_sequences: int, pad_token_id: int, names: list[str], device) -> BeamSearchOutput:
        """The best `num_return_sequences` of each utterance, padded into one tensor."""
        R = num_return_sequences
        chosen = [pool[:R] for pool in self.pools]
        width = max(len(sequence) for pool in chosen for _, sequence, _ in pool)
        sequences = torch.full((len(chosen) * R, width), pad_token_id, dtype=torch.long)
        scores = torch.zeros(len(chosen) * R)
        scorer_totals = torch.zeros(len(chosen) * R, len(names))
        for u, pool in enumerate(chosen):
            for r, (score, sequence, parts) in enumerate(pool):
                sequences[u * R + r, : len(sequence)] = torch.tensor(sequence)
                scores[u * R + r] = score
                scorer_totals[u * R + r] = parts.cpu()
        return BeamSearchOutput(
            sequences.to(device), scores.to(device), {n: scorer_totals[:, i].to(device) for i, n in enumerate(names)}
        )


@dataclass
class _Beams:
    """The running hypotheses of the utterances still searching, K rows each: their tokens, fused scores, each
    scorer's total and each scorer's state."""

    active: torch.LongTensor  # (A,) the utterances still searching
    tokens: torch.LongTensor  # (A * K, generated + 1)
    running: torch.Tensor  # (A, K) fused scores, _FINISHED for an empty beam
    parts: torch.Tensor  # (A * K, scorers) each scorer's unweighted total
    states: dict

    def select(self, scorers: dict, keep: torch.LongTensor, rows: torch.LongTensor, tokens: torch.LongTensor,
               running: torch.Tensor, parts: torch.Tensor) -> "_Beams":  # fmt: skip
        """The beams of the utterances `keep` (indices into `active`), `rows` of the scorers' states going on with
        `tokens`, a token each."""
        states = {name: s.select_state(self.states[name], rows, tokens[:, -1]) for name, s in scorers.items()}
        return _Beams(self.active[keep], tokens, running, parts, states)


@dataclass
class _Continuations:
    """Each utterance's 2K best continuations of its K beams (as transformers, so that K of them still run even
    when K end here) and, among them, the K that go on."""

    scores: torch.Tensor  # (A, 2K) fused
    rows: torch.LongTensor  # (A, 2K) the beam row each continues
    tokens: torch.LongTensor  # (A, 2K) the token each adds
    ends: torch.Tensor  # (A, 2K) bool: with [EOS] or at the utterance's limit
    kept: torch.LongTensor  # (A, K) indices into the 2K of those that go on
    kept_scores: torch.Tensor  # (A, K)


def _score_step(full: dict, partial: dict, weights: dict, beams: _Beams, pre_beam_size: int, vocab_size: int,
                ranked: bool) -> tuple[torch.Tensor, dict]:  # fmt: skip
    """Score every row's next token: the weighted sum `total` (rows, vocab) and each scorer's own scores. Partial
    scorers score only the pre-beam, the best `pre_beam_size` tokens by the full scorers (every token when none of
    them ranks), and leave NEG_INF outside it. Updates `beams.states`."""
    N, V, device = beams.tokens.shape[0], vocab_size, beams.tokens.device
    step = {}
    for name, scorer in full.items():
        step[name], beams.states[name] = scorer.score(beams.tokens, beams.states[name])
    total = sum(weights[n] * step[n] for n in full) if full else torch.zeros(N, V, device=device)
    if partial:
        if ranked:
            pre_beam = total.topk(pre_beam_size, dim=1).indices  # (rows, P): by every full scorer, constraints too
        else:
            pre_beam = torch.arange(V, device=device).expand(N, V)
        outside = torch.full((N, V), NEG_INF, device=device)
        for name, scorer in partial.items():
            scores, beams.states[name] = scorer.score_partial(beams.tokens, pre_beam, beams.states[name])
            step[name] = outside.scatter(1, pre_beam, scores)
        total = total + outside.scatter(1, pre_beam, sum(weights[n] * step[n].gather(1, pre_beam) for n in partial))
    return total, step


def _best_continuations(total: torch.Tensor, running: torch.Tensor, limits: torch.LongTensor, generated: int,
                        num_beams: int, eos_token_id: int) -> _Continuations:  # fmt: skip
    """The 2K best (beam, token) pairs of each utterance by fused score; a pair ends with [EOS] or at the
    utterance's limit (`limits`, (A,)), and the K best that do not end go on."""
    K, V = num_beams, total.shape[1]
    A = running.shape[0]
    candidates = (total + running.view(A * K, 1)).view(A, K * V)
    scores, top = candidates.topk(2 * K, dim=1)
    rows = top // V + torch.arange(A, device=total.device)[:, None] * K
    tokens = top % V
    ends = (tokens == eos_token_id) | (generated >= limits)[:, None]
    kept_scores, kept = (scores + ends * _FINISHED).topk(K, dim=1)
    return _Continuations(scores, rows, tokens, ends, kept, kept_scores)


def _finish(finished: _FinishedHypotheses, beams: _Beams, best: _Continuations, parts: torch.Tensor,
            generated: int, options: BeamSearchOptions) -> None:  # fmt: skip
    """Add the continuations that end here and rank among their utterance's top K to its finished pool, scored
    length-normalised. With early_stopping=True a full pool takes no more (checked before this step's additions,
    as transformers)."""
    K = options.num_beams
    normalised = best.scores / generated**options.length_penalty
    closed = [options.early_stopping is True and finished.is_full(u) for u in beams.active.tolist()]
    for a, j in (best.ends[:, :K] & (best.scores[:, :K] > _FINISHED / 2)).nonzero().tolist():
        if not closed[a]:
            sequence = beams.tokens[best.rows[a, j]].tolist() + [best.tokens[a, j].item()]
            finished.add(int(beams.active[a]), normalised[a, j].item(), sequence, parts[a * 2 * K + j])


def _done_utterances(finished: _FinishedHypotheses, beams: _Beams, best: _Continuations, limits: torch.LongTensor,
                     generated: int, options: BeamSearchOptions) -> torch.Tensor:  # fmt: skip
    """Which utterances are done: their K finished hypotheses cannot be beaten by a running one (transformers'
    heuristic: the best running score, normalised at the current length), or nothing can go on. One that ends with
    fewer finished than asked for (every ending impossible for CTC, say) takes its best running ones."""
    K = options.num_beams
    done = torch.zeros(len(beams.active), dtype=torch.bool)
    for a, utterance in enumerate(beams.active.tolist()):
        if best.ends[a].all() or generated >= options.max_new_tokens:
            done[a] = True
            for k in range(options.num_return_sequences - len(finished.pools[utterance])):
                finished.add(utterance, beams.running[a, k].item() / generated**options.length_penalty,
                             beams.tokens[a * K + k].tolist(), beams.parts[a * K + k])  # fmt: skip
        elif finished.is_full(utterance):
            if options.early_stopping is True:
                done[a] = True
            else:
                length = generated
                if options.early_stopping == "never" and options.length_penalty > 0:
                    length = int(limits[a])
                done[a] = beams.running[a, 0].item() / length**options.length_penalty <= finished.worst_score(utterance)
    return done


def beam_search(
    scorers: dict[str, Scorer],
    weights: dict[str, float],
    num_utterances: int,
    max_new_tokens: torch.LongTensor,
    options: BeamSearchOptions,
    start_token_id: int,
    eos_token_id: int,
    pad_token_id: int,
    vocab_size: int,
    device: torch.device | str = "cpu",
    synced_gpus: bool = False,
) -> BeamSearchOutput:
    """Beam search over `num_utterances` utterances at once, ranking hypotheses by sum(weights[name] * score[name]).

    Each step scores the next token (`_score_step`), keeps each utterance's best continuations
    (`_best_continuations`), moves those that end into the pool of finished hypotheses (`_finish`) and the K best
    others into the beams, and retires the utterances that are done (`_done_utterances`).

    Args:
        scorers: named scorers; full ones score the whole vocabulary, partial ones (`PartialScorer`) only the
            pre-beam: the best `options.pre_beam_size` tokens by the weighted full scores (every token when no full
            scorer can rank them).
        weights: weight of each scorer; a weight of 0 removes it.
        max_new_tokens (`torch.LongTensor` of shape `(num_utterances,)`): each utterance's longest output.
        synced_gpus: as transformers' `generate(synced_gpus=True)` (FSDP, DeepSpeed ZeRO-3): the processes of
            `torch.distributed` step together until every one is done, a process whose utterances are done running
            its scorers' models without using them (`Scorer.keep_in_step`), so that no collective operation waits
            for a process that stopped.
    """
    scorers = {name: s for name, s in scorers.items() if weights.get(name, 0.0) != 0.0}
    if not scorers:
        raise ValueError("beam search needs at least one scorer with a non-zero weight")
    full = {n: s for n, s in scorers.items() if not isinstance(s, PartialScorer)}
    partial = {n: s for n, s in scorers.items() if isinstance(s, PartialScorer)}
    ranked = any(not s.constant for s in full.values())
    names = list(scorers)
    K = options.num_beams
    pre_beam_size = min(options.pre_beam_size, vocab_size) if ranked else vocab_size

    rows_utterance = torch.arange(num_utterances, device=device).repeat_interleave(K)
    running = torch.full((num_utterances, K), _FINISHED, device=device)
    running[:, 0] = 0.0  # one live beam to start with, so that the first step does not pick one token K times
    beams = _Beams(
        active=torch.arange(num_utterances, device=device),
        tokens=torch.full((num_utterances * K, 1), start_token_id, dtype=torch.long, device=device),
        running=running,
        parts=torch.zeros(num_utterances * K, len(names), device=device),
        states={name: s.init_state(rows_utterance) for name, s in scorers.items()},
    )
    finished = _FinishedHypotheses(num_utterances, K)
    limits = max_new_tokens.to(device)
    not_eos = torch.arange(vocab_size, device=device)
    not_eos = not_eos[not_eos != eos_token_id]

    for generated in range(1, options.max_new_tokens + 1):  # `generated` counts the token this step adds
        A = len(beams.active)
        total, step = _score_step(full, partial, weights, beams, pre_beam_size, vocab_size, ranked)
        # An utterance's own limit, when tighter than max_new_tokens, is where its transcript must end: only [EOS].
        active_limits = limits[beams.active]
        last = ((generated == active_limits) & (active_limits < options.max_new_tokens)).repeat_interleave(K)
        if last.any():
            total[last] = total[last].index_fill(1, not_eos, NEG_INF)

        best = _best_continuations(total, beams.running, active_limits, generated, K, eos_token_id)
        step_parts = torch.stack([step[n][best.rows.view(-1), best.tokens.view(-1)] for n in names], dim=-1)
        parts = beams.parts[best.rows.view(-1)] + step_parts  # (A * 2K, scorers)
        _finish(finished, beams, best, parts, generated, options)

        kept_rows, kept_tokens = best.rows.gather(1, best.kept).view(-1), best.tokens.gather(1, best.kept).view(-1)
        every = torch.arange(A, device=device)
        beams = beams.select(scorers, every, kept_rows, torch.cat([beams.tokens[kept_rows], kept_tokens[:, None]], 1),
                             best.kept_scores, parts[(best.kept + every[:, None] * 2 * K).view(-1)])  # fmt: skip

        done = _done_utterances(finished, beams, best, active_limits, generated, options)
        if done.all():
            break
        if synced_gpus:
            _everyone_done(False, device)
        if done.any():
            keep = (~done).nonzero().squeeze(1).to(device)
            rows = (keep[:, None] * K + torch.arange(K, device=device)).view(-1)
            beams = beams.select(scorers, keep, rows, beams.tokens[rows], beams.running[keep], beams.parts[rows])

    while synced_gpus and not _everyone_done(True, device):
        for scorer in scorers.values():
            scorer.keep_in_step()
    return finished.output(options.num_return_sequences, pad_token_id, names, device)


def _everyone_done(done_here: bool, device) -> bool:
    """Whether every process of `torch.distributed` is done (one all-reduce, as transformers' synced_gpus)."""
    flag = torch.tensor(0.0 if done_here else 1.0, device=device)
    torch.distributed.all_reduce(flag)
    return flag.item() == 0.0


# ---------------------------------------------------------------------------------------------------------------------
# CTC alone


def ctc_prefix_beam_search(
    log_probs: torch.Tensor,
    lengths: torch.LongTensor,
    num_beams: int,
    blank_token_id: int,
    excluded_token_ids=(),
    num_return_sequences: int = 1,
    ngram: "NgramScorer | None" = None,
    ngram_weight: float = 0.0,
    word_bonus: float = 0.0,
) -> tuple[list[list[list[int]]], list[list[float]]]:
    """Frame-synchronous CTC prefix beam search (Hannun et al., 2014), optionally with a word n-gram LM: the
    fastest search, for `generate(decoding="ctc", num_beams>1)` (and `ngram_lm=`).

    At each frame each prefix keeps two log-probs, of its alignments ending in a blank and in its last label; it is
    extended by the `num_beams` likeliest tokens of the frame, and the `num_beams` best prefixes survive, ranked by
    log p_ctc + ngram_weight * log p_ngram(words) + word_bonus * words (the n-gram scored word by word as a prefix
    grows, with `NgramScorer.extend`, as pyctcdecode does; the sentence end is scored after the last frame).

    Returns:
        per utterance, the `num_return_sequences` best label sequences and their fused scores (log p_ctc(y | x)
        without an n-gram LM).
    """
    banned = {blank_token_id, *excluded_token_ids}
    x = log_probs.double().cpu()
    k = min(num_beams + len(banned), x.shape[-1])
    fused = ngram is not None and (ngram_weight or word_bonus)
    all_sequences, all_scores = [], []
    for b in range(x.shape[0]):
        beams = {(): (0.0, NEG_INF)}  # prefix -> (log p ending in blank, log p ending in its last label)
        # prefix -> (weighted n-gram score and word bonus so far, the n-gram hypothesis)
        words = {(): (0.0, ngram.begin())} if fused else None
        top_tokens = x[b, : int(lengths[b])].topk(k, dim=-1).indices.tolist()
        for t, frame in enumerate(x[b, : int(lengths[b])].tolist()):
            extended: dict[tuple, list[float]] = {}
            for prefix, (blank, label) in beams.items():
                _add(extended, prefix, _logaddexp(blank, label) + frame[blank_token_id], NEG_INF)
                if prefix:  # the last label again, merged into itself
                    _add(extended, prefix, NEG_INF, label + frame[prefix[-1]])
                for c in top_tokens[t]:
                    if c in banned:
                        continue
                    # after a blank, a repeat of the last label is a new label; right after it, it is the same one
                    through = blank if prefix and c == prefix[-1] else _logaddexp(blank, label)
                    _add(extended, prefix + (c,), NEG_INF, through + frame[c])
                    if fused and prefix + (c,) not in words:
                        score, completed, hypothesis = ngram.extend(words[prefix][1], c)
                        words[prefix + (c,)] = (words[prefix][0] + ngram_weight * score + word_bonus * completed,
                                                hypothesis)  # fmt: skip
            bonus = (lambda prefix: words[prefix][0]) if fused else (lambda prefix: 0.0)
            ranked = sorted(extended.items(), key=lambda item: -(_logaddexp(*item[1]) + bonus(item[0])))
            beams = {prefix: tuple(scores) for prefix, scores in ranked[:num_beams]}
            if fused:
                words = {prefix: words[prefix] for prefix in beams}
        if fused:  # the last word and the sentence end
            final = {}
            for prefix in beams:
                score, completed, _ = ngram.extend(words[prefix][1], ngram.eos)
                final[prefix] = words[prefix][0] + ngram_weight * score + word_bonus * completed
        else:
            final = dict.fromkeys(beams, 0.0)
        best = sorted(beams.items(), key=lambda item: -(_logaddexp(*item[1]) + final[item[0]]))[:num_return_sequences]
        all_sequences.append([list(prefix) for prefix, _ in best])
        all_scores.append([_logaddexp(*scores) + final[prefix] for prefix, scores in best])
    return all_sequences, all_scores


def ctc_forced_align(
    log_probs: torch.Tensor,
    lengths: torch.LongTensor,
    labels: torch.LongTensor,
    label_lengths: torch.LongTensor,
    blank_token_id: int,
) -> tuple[torch.LongTensor, torch.Tensor]:
    """The most likely CTC alignment of known transcripts (Viterbi), batched over utterances: which label each
    frame emits. torchaudio's `forced_align` does the same for one utterance, in a dependency speechseq does not take.

    Over the transcript with blanks around and between its labels (2L + 1 states), a frame stays in its state, moves
    to the next, or skips a blank between two different labels; padding frames and padding labels take no part.

    Args:
        log_probs (`torch.Tensor` of shape `(batch, frames, vocab)`): CTC log-probabilities.
        lengths (`torch.LongTensor` of shape `(batch,)`): real frames of each utterance.
        labels (`torch.LongTensor` of shape `(batch, L)`): the transcripts' token ids (no special tokens), padded
            with anything past `label_lengths`.
        label_lengths (`torch.LongTensor` of shape `(batch,)`): labels of each transcript.

    Returns:
        `(positions, scores)`: `(batch, frames)` the index in its transcript of the label each frame emits, -1 for
        blank frames and padding; `(batch,)` each alignment's log-probability.

    Raises:
        ValueError: when a transcript needs more frames than its utterance has (naming the row).
    """
    B, T, _ = log_probs.shape
    L = labels.shape[1]
    S = 2 * L + 1
    device = log_probs.device
    states = torch.full((B, S), blank_token_id, dtype=torch.long, device=device)
    real_label = torch.arange(L, device=device)[None] < label_lengths[:, None]
    states[:, 1::2] = torch.where(real_label, labels, blank_token_id)
    valid = torch.arange(S, device=device)[None] <= 2 * label_lengths[:, None]
    skip = torch.zeros(B, S, dtype=torch.bool, device=device)  # a label may follow the label two states before
    skip[:, 2:] = (states[:, 2:] != blank_token_id) & (states[:, 2:] != states[:, :-2])
    emit = log_probs.float().gather(2, states[:, None, :].expand(B, T, S))  # (B, T, S)

    alpha = torch.full((B, S), NEG_INF, device=device)
    alpha[:, 0] = emit[:, 0, 0]
    if L:
        alpha[:, 1] = torch.where(label_lengths > 0, emit[:, 0, 1], NEG_INF)
    alpha = alpha.masked_fill(~valid, NEG_INF)
    back = torch.zeros(T, B, S, dtype=torch.long, device=device)  # 0: stayed, 1: from the state before, 2: skipped
    none = torch.full((B, 2), NEG_INF, device=device)
    for t in range(1, T):
        before = torch.cat([none[:, :1], alpha[:, :-1]], dim=1)
        two_before = torch.cat([none, alpha[:, :-2]], dim=1).masked_fill(~skip, NEG_INF)
        best, step = torch.stack([alpha, before, two_before], dim=-1).max(dim=-1)
        active = (t < lengths)[:, None]
        alpha = torch.where(active, (best + emit[:, t]).masked_fill(~valid, NEG_INF), alpha)
        back[t] = torch.where(active, step, 0)

    rows = torch.arange(B, device=device)
    last_blank, last_label = 2 * label_lengths, (2 * label_lengths - 1).clamp(min=0)
    end_blank, end_label = alpha[rows, last_blank], alpha[rows, last_label]
    state = torch.where(end_label > end_blank, last_label, last_blank)
    scores = torch.maximum(end_blank, end_label)
    if (scores == NEG_INF).any():
        row = int((scores == NEG_INF).nonzero()[0])
        raise ValueError(f"row {row}: its transcript of {int(label_lengths[row])} labels cannot be aligned with its "
                         f"{int(lengths[row])} encoder frames (repeated labels need a blank between them)")  # fmt: skip
    path = torch.empty(B, T, dtype=torch.long, device=device)
    for t in range(T - 1, -1, -1):
        path[:, t] = state
        state = state - back[t, rows, state]
    positions = torch.where(path % 2 == 1, (path - 1) // 2, -1)
    positions = positions.masked_fill(torch.arange(T, device=device)[None] >= lengths[:, None], -1)
    return positions, scores


def timestamp_chunks(token_spans: list, pieces: list, frame_seconds: float, level: str = "word") -> list[dict]:
    """One utterance's aligned tokens as transformers' ASR pipeline gives timestamps: `[{"text", "timestamp": (start,
    end)}]` in seconds, per word (the spans of its tokens joined) or per character token.

    Args:
        token_spans (`list` of `(token_id, start_frame, end_frame)`): the aligned labels, end frame exclusive.
        pieces (`list`): per token id, `None` or `(starts_word, text)` (`ngram_lm.word_pieces`).
        frame_seconds (`float`): the duration of one encoder frame.
        level (`str`): `"word"` or `"char"` (one chunk per token that has text).
    """
    if level not in ("word", "char"):
        raise ValueError(f"level must be 'word' or 'char', got {level!r}")
    chunks, in_word = [], False
    for token, start, end in token_spans:
        if pieces[token] is None:
            continue
        starts, text = pieces[token]
        seconds = (round(start * frame_seconds, 3), round(end * frame_seconds, 3))
        in_word = in_word and not starts  # a space or a `▁` piece ends the word before it
        if not text:
            continue
        if level == "word" and in_word:
            chunks[-1] = {"text": chunks[-1]["text"] + text, "timestamp": (chunks[-1]["timestamp"][0], seconds[1])}
        else:
            chunks.append({"text": text, "timestamp": seconds})
        in_word = True
    return chunks


def silence_segments(is_blank: list[bool], max_frames: int, min_pause: int | None = None) -> list[tuple[int, int]]:
    """Cut a long recording into segments at pauses (runs of CTC blanks): at every pause of at least `min_pause`
    frames (a sentence's end: the model learned sentences, whose transcripts neither start nor end with a space, so
    two sentences in one segment come out glued), and then, inside any segment still longer than `max_frames`, in
    the middle of the longest run of blanks in the second half of each `max_frames` (at the limit when there is
    none).

    Returns:
        `(start, end)` frames of each segment, end exclusive, covering every frame in order.
    """
    if max_frames < 2:
        raise ValueError(f"max_frames must be at least 2, got {max_frames!r}")
    n = len(is_blank)
    bounds, run_start = [0], None
    for t in range(n + 1):
        if t < n and is_blank[t]:
            run_start = t if run_start is None else run_start
            continue
        if min_pause and run_start is not None and t - run_start >= min_pause and 0 < run_start and t < n:
            bounds.append((run_start + t) // 2)
        run_start = None
    bounds.append(n)
    segments = []
    for start, stop in zip(bounds, bounds[1:]):
        while stop - start > max_frames:
            best, run_start, cut = 0, None, start + max_frames
            for t in range(start + max_frames // 2, start + max_frames + 1):
                if t < stop and is_blank[t]:
                    run_start = t if run_start is None else run_start
                    continue
                if run_start is not None and t - run_start > best:
                    best, cut = t - run_start, (run_start + t) // 2
                run_start = None
            segments.append((start, cut))
            start = cut
        segments.append((start, stop))
    return segments


def trim_pauses(segments: list[tuple[int, int]], is_blank: list[bool], margin: int,
                min_speech: int = 1) -> list[tuple[int, int]]:  # fmt: skip
    """Each `(start, end)` segment cut down to its speech (its first to its last non-blank frame) and `margin` frames
    of pause on each side; a segment with less than `min_speech` frames from its first to its last non-blank frame
    is dropped (no speech, or a click in a pause: a VAD's minimum speech duration).

    A model trained on sentences heard a few tenths of a second of silence around each, not half a long pause of
    room noise on each side: untrimmed, the demo's model lost 6-8 points of long-form WER, and it heard a word in the
    lone non-blank frame that its CTC head finds in some pauses."""
    if margin < 0 or min_speech < 1:
        raise ValueError(f"margin must be >= 0 and min_speech >= 1 frames, got {margin!r} and {min_speech!r}")
    trimmed = []
    for start, end in segments:
        speech = [t for t in range(start, end) if not is_blank[t]]
        if speech and speech[-1] + 1 - speech[0] >= min_speech:
            trimmed.append((max(start, speech[0] - margin), min(end, speech[-1] + 1 + margin)))
    return trimmed


def _add(prefixes: dict, prefix: tuple, blank: float, label: float):
    old = prefixes.setdefault(prefix, [NEG_INF, NEG_INF])
    old[0], old[1] = _logaddexp(old[0], blank), _logaddexp(old[1], label)


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    high = max(a, b)
    return high + math.log1p(math.exp(-abs(a - b)))


# ---------------------------------------------------------------------------------------------------------------------
# The external language model


def check_fusion_lm(lm, config) -> None:
    """Raise a `ValueError` saying what differs when `lm` cannot score the ASR model's tokens: its vocabulary size or
    its start / end / padding tokens."""
    lm_config = lm.config
    lm_vocab = lm.get_output_embeddings().weight.shape[0] if lm.get_output_embeddings() is not None else None
    lm_vocab = lm_vocab or lm_config.vocab_size
    differences = []
    if lm_vocab != config.vocab_size:
        differences.append(f"vocabulary size {lm_vocab} != the ASR model's {config.vocab_size}")
    pairs = (("bos_token_id", "decoder_start_token_id"), ("eos_token_id", "eos_token_id"), ("pad_token_id", "pad_token_id"))
    for lm_name, asr_name in pairs:
        lm_id, asr_id = getattr(lm_config, lm_name, None), getattr(config, asr_name)
        if isinstance(lm_id, (list, tuple)):
            lm_id = lm_id[0] if len(lm_id) == 1 else lm_id
        if lm_id != asr_id:
            differences.append(f"{lm_name} {lm_id} != the ASR model's {asr_name} {asr_id}")
    if differences:
        raise ValueError(
            f"the language model ({type(lm).__name__}) does not share the ASR model's tokens: "
            + "; ".join(differences)
            + ". Train it with the ASR model's tokenizer (examples/run_lm.py)."
        )


# generate()'s search options and their defaults when neither the call nor generation_config sets them.
_SEARCH_DEFAULTS = {
    "num_beams": 1, "num_return_sequences": 1, "ctc_weight": 0.0, "lm_weight": 0.0, "length_bonus": 0.0,
    "length_penalty": 1.0, "early_stopping": False, "temperature": 1.0, "repetition_penalty": 1.0,
    "ngram_weight": 0.0, "unk_penalty": -3.0, "word_bonus": 0.0,
}  # fmt: skip
# What transformers' callers pass to generate() that speechseq's searches do not need: Seq2SeqTrainer's
# prediction_step adds `labels` and `synced_gpus`; the ASR pipeline and users may ask for cache and sampling settings.
# (use_cache: speechseq's searches always cache, which changes their speed, not their output.)
_IGNORED_GENERATE_KWARGS = {"labels", "use_cache"}
# transformers' token constraints, which speechseq's beam search applies as `TokenConstraints`
_CONSTRAINTS = ("min_length", "min_new_tokens", "suppress_tokens", "begin_suppress_tokens", "no_repeat_ngram_size",
                "bad_words_ids")  # fmt: skip


@dataclass
class SpeechSeqGenerateOutput(GenerateBeamEncoderDecoderOutput):
    r"""
    What `generate(..., return_dict_in_generate=True)` returns from speechseq's own searches: transformers' beam
    output (`sequences`, `sequences_scores`) and each scorer's share.

    scorer_scores (`dict[str, torch.FloatTensor]`, *optional*): for each scorer (`"decoder"`, `"ctc"`, `"lm"`,
        `"length_bonus"`), its unweighted total score of each returned sequence, shape `(batch * num_return_sequences,)`.
    token_spans (`list`, *optional*): with `return_token_spans=True`, per returned sequence `(token_id, start_frame,
        end_frame)` of each of its tokens in the input's encoder frames (`model.align`; long recordings are aligned
        segment by segment). `timestamp_chunks` turns them into words with times.
    """

    scorer_scores: dict[str, torch.FloatTensor] | None = None
    token_spans: list[list[tuple[int, int, int]]] | None = None


class SpeechSeqGenerationMixin(GenerationMixin):
    """Everything about decoding a speechseq model, as transformers keeps Whisper's in `generation_whisper.py`:
    `generate()` and its dispatch to transformers' greedy search, the joint CTC/attention beam search or the CTC
    searches; language models; long recordings cut into segments; the CTC head's forced alignment and timestamps.

    The model it is mixed into provides the network: `encode(input_features, attention_mask)` (encoder output and
    lengths), `decoder_step(...)` (next-token logits through the cache), `ctc_log_probs(encoder_hidden_states)` and
    `_get_feat_extract_output_lengths`."""

    def generate(
        self,
        input_features: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        decoding: str | None = None,
        lm=None,
        ngram_lm=None,
        tokenizer=None,
        **kwargs,
    ):
        r"""
        Transcribe: greedy or beam search with the attention decoder, fused with CTC prefix scores and an external
        language model; or the CTC head alone.

        Every option may also be set on `generation_config` (`model.generation_config.ctc_weight = 0.3`, saved with
        the model), which `pipeline("automatic-speech-recognition")` and `Seq2SeqTrainer(predict_with_generate=True)`
        then use; keyword arguments win.

        Args:
            input_features (`torch.FloatTensor` of shape `(batch, frames, num_mel_bins)`): also accepted as `inputs`.
            attention_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*): 1 on real frames.
            decoding (`str`, *optional*, defaults to `"attention"`): `"attention"` (the decoder, with the scorers
                below) or `"ctc"` (the CTC head alone: best path with one beam, prefix beam search with more).
            num_beams (`int`, defaults to 1): one beam with the decoder alone is transformers' greedy search; anything
                else is speechseq's beam search.
            ctc_weight (`float`, defaults to 0): weight of the CTC prefix score; the decoder gets `1 - ctc_weight`.
            lm (`PreTrainedModel` or `str`, *optional*): the fusion language model, or its directory; any
                `AutoModelForCausalLM` with the ASR model's vocabulary and special tokens.
            lm_weight (`float`, defaults to 0): weight of the language model's log-probabilities.
            length_bonus (`float`, defaults to 0): score added per token.
            ngram_lm (`str`, `os.PathLike` or `WordLanguageModel`, *optional*): a word n-gram LM, ARPA or KenLM binary
                (`speechseq.train_ngram_lm`, `examples/build_ngram_lm.py`), fused word by word into the beam search
                and into the CTC prefix search. Saved in `generation_config` as a path relative to the model's
                directory (the file inside it), so that the setting survives moving or copying the directory.
            ngram_weight (`float`, defaults to 0): weight of its log-probabilities.
            unk_penalty (`float`, defaults to -3): its score of each character spelled outside its words.
            word_bonus (`float`, defaults to 0): score added per completed word.
            tokenizer (`PreTrainedTokenizerBase`, *optional*): the model's tokenizer, which the n-gram LM needs to
                read tokens as words; by default the one saved in the model's directory.
            num_return_sequences, length_penalty, early_stopping, repetition_penalty, max_new_tokens, max_length,
                return_dict_in_generate, and the token constraints min_new_tokens, min_length, suppress_tokens,
                begin_suppress_tokens, no_repeat_ngram_size, bad_words_ids (`TokenConstraints`; with
                `decoding="ctc"` only suppress_tokens): transformers' meanings. `temperature` is ignored without
                sampling, as in transformers; `do_sample` and per-step `output_scores` are transformers' greedy
                search's only. The length
                is capped at `max_target_positions - 1` new tokens (the pipeline asks for 256 whatever the model)
                and at one token per encoder frame plus `[EOS]` (per utterance in beam search).
            segment_seconds (`float`, defaults to `SEGMENT_SECONDS`, 10): recordings longer than 1.5 times this are
                cut at pauses into segments of at most this long, decoded one by one and joined (see
                `long_form_segments`).
            segment_normalization (`str`, *optional*): `"utterance"` normalises each segment's features over itself
                (the pipeline passes its feature extractor's normalisation).
            return_token_spans (`bool`, defaults to False): also align each returned sequence with the CTC head
                (`align`; segment by segment for long recordings) and return a [`SpeechSeqGenerateOutput`] with
                `token_spans`, from which `timestamp_chunks` makes word or character times.

        Returns:
            `torch.LongTensor` of shape `(batch * num_return_sequences, tokens)`: `decoder_start_token_id`, the tokens,
            `eos_token_id`, then padding (as transformers' `generate`); or, with `return_dict_in_generate=True` in
            speechseq's searches, a [`SpeechSeqGenerateOutput`] with `sequences_scores` and `scorer_scores`.

        Example:

        ```python
        >>> import torch
        >>> from speechseq import SpeechSeqConfig, SpeechSeqForConditionalGeneration
        >>> model = SpeechSeqForConditionalGeneration(SpeechSeqConfig.from_preset("tiny", vocab_size=40)).eval()
        >>> features = torch.randn(2, 100, 80)
        >>> out = model.generate(features, num_beams=4, ctc_weight=0.3, max_new_tokens=8, return_dict_in_generate=True)
        >>> sorted(out.scorer_scores)
        ['ctc', 'decoder']
        ```
        """
        if input_features is None:  # transformers' own name for the main input, as in `generate(inputs=features)`
            input_features = kwargs.pop("inputs", None)
        if input_features is None or input_features.dim() != 3 or input_features.shape[0] == 0:
            raise ValueError(
                "generate() takes input_features of shape (batch, frames, features) with at least one utterance, got "
                f"{None if input_features is None else tuple(input_features.shape)}"
            )
        config = generation_config or self.generation_config
        segment_seconds = (kwargs.pop("segment_seconds", None) or getattr(config, "segment_seconds", None)
                           or SEGMENT_SECONDS)  # fmt: skip
        segment_normalization = kwargs.pop("segment_normalization", None)
        return_token_spans = kwargs.pop("return_token_spans", False)
        if int(frame_lengths(input_features, attention_mask).max()) * 0.01 > 1.5 * segment_seconds:
            return self._long_form(input_features, attention_mask, segment_seconds, segment_normalization,
                                   return_token_spans, generation_config=generation_config, decoding=decoding, lm=lm,
                                   ngram_lm=ngram_lm, tokenizer=tokenizer, **kwargs)  # fmt: skip

        def setting(name, default):
            value = kwargs.pop(name, None)
            value = getattr(config, name, None) if value is None else value
            return default if value is None else value

        decoding = decoding or setting("decoding", "attention")
        options = {name: setting(name, default) for name, default in _SEARCH_DEFAULTS.items()}
        if lm is None and getattr(config, "lm", None):
            lm = self._in_model_dir(config.lm)
        if ngram_lm is None and getattr(config, "ngram_lm", None):
            ngram_lm = self._in_model_dir(config.ngram_lm)
        return_dict = setting("return_dict_in_generate", False)
        # One token per encoder frame at most (CTC's bound, and a stop for a decoder that loops), plus [EOS].
        most = int(self._get_feat_extract_output_lengths(frame_lengths(input_features, attention_mask)).max()) + 1
        max_new_tokens = min(self._max_new_tokens(kwargs, config), most)
        if decoding not in ("attention", "ctc"):
            raise ValueError(f"decoding must be 'attention' or 'ctc', got {decoding!r}")
        if options["lm_weight"] and lm is None:
            raise ValueError("lm_weight > 0 needs a language model: pass lm=<model or directory>")
        if (options["ngram_weight"] or options["word_bonus"]) and ngram_lm is None:
            raise ValueError("ngram_weight and word_bonus need a word n-gram LM: pass ngram_lm=<ARPA file>")

        fused = any(options[name] for name in ("ctc_weight", "lm_weight", "length_bonus", "ngram_weight", "word_bonus"))
        if decoding == "attention" and options["num_beams"] == 1 and not fused:
            # transformers' greedy search: the fast path (and every one of its own options)
            kwargs.pop("max_length", None)
            # every option passes on, num_beams too: transformers would take a saved num_beams > 1 from the config
            for name in ("num_beams", "num_return_sequences", "length_penalty", "early_stopping", "temperature",
                         "repetition_penalty"):  # fmt: skip
                kwargs[name] = options[name]
            # The cap as a total length (the decoder's prompt included), max_new_tokens unset: transformers warns
            # when both are set, as they are for every model whose saved generation config has a max_length.
            prompt = kwargs.get("decoder_input_ids")
            kwargs["max_length"] = max_new_tokens + (1 if prompt is None else prompt.shape[-1])
            output = super().generate(
                input_features, attention_mask=attention_mask, generation_config=generation_config,
                max_new_tokens=None, return_dict_in_generate=return_dict, **kwargs,
            )  # fmt: skip
            self._warn_if_cut(output.sequences if return_dict else output, max_new_tokens)
            if return_token_spans:
                return self._with_token_spans(output, input_features, attention_mask)
            return output

        constraints = {name: setting(name, None) for name in _CONSTRAINTS}
        synced_gpus = kwargs.pop("synced_gpus", None)
        if synced_gpus is None:  # transformers' default
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            synced_gpus = distributed and torch.distributed.get_world_size() > 1 and (
                is_deepspeed_zero3_enabled() or is_fsdp_managed_module(self))  # fmt: skip
        search_name = "beam" if decoding == "attention" else "CTC"
        for name in ("do_sample", "output_scores", "output_attentions", "output_hidden_states", "output_logits"):
            if setting(name, False):
                raise ValueError(f"{name}=True is not supported by speechseq's {search_name} search (it returns "
                                 "sequences_scores and each scorer's share with return_dict_in_generate=True); "
                                 "transformers' greedy search, the decoder alone with num_beams=1, supports it")
        unknown = set(kwargs) - _IGNORED_GENERATE_KWARGS
        if unknown:
            raise ValueError(f"generate() got options speechseq's search does not use: {sorted(unknown)}")
        if options.pop("temperature") != 1.0:  # as transformers: temperature shapes sampling, and nothing here samples
            logger.warning("temperature is ignored without sampling (as in transformers); speechseq's searches do "
                           "not sample")  # fmt: skip
        search = BeamSearchOptions(max_new_tokens=max_new_tokens, **options)
        set_constraints = sorted(name for name, value in constraints.items() if value not in (None, 0, [], ())
                                 and name != "suppress_tokens")  # CTC never emits suppressed tokens either
        if decoding == "ctc" and (set_constraints or search.repetition_penalty != 1.0):
            raise ValueError(f"decoding='ctc' cannot apply {set_constraints or ['repetition_penalty']}: they act on "
                             "the decoder's tokens (use decoding='attention', with ctc_weight=1 for CTC scores alone)")
        c = self.config
        constraint = TokenConstraints(c.vocab_size, c.eos_token_id, **constraints)
        if constraint.active and max(constraint.min_length - 1, constraint.min_new_tokens) >= max_new_tokens:
            raise ValueError(f"min_new_tokens / min_length ask for more tokens than the {max_new_tokens} allowed")
        extra_scorers = self._word_scorers(ngram_lm, tokenizer, search, decoding)
        if decoding == "ctc":
            output = self._ctc_search(input_features, attention_mask, search, extra_scorers, constraint.suppress)
        else:
            if constraint.active:
                extra_scorers["constraints"] = constraint
            output = self._joint_search(input_features, attention_mask, search, self._fusion_lm(lm, search.lm_weight),
                                        extra_scorers, synced_gpus)  # fmt: skip
        self._warn_if_cut(output.sequences, max_new_tokens)
        if return_token_spans:
            return self._with_token_spans(output, input_features, attention_mask)
        return output if return_dict else output.sequences

    def _with_token_spans(self, output, input_features, attention_mask) -> SpeechSeqGenerateOutput:
        """`generate()`'s output with `token_spans`: the CTC head's alignment of each returned sequence."""
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        copies = len(sequences) // len(input_features)  # num_return_sequences
        mask = None if attention_mask is None else attention_mask.repeat_interleave(copies, dim=0)
        spans = self._align_where_possible(input_features.repeat_interleave(copies, dim=0), sequences, mask)
        return SpeechSeqGenerateOutput(
            sequences=sequences, sequences_scores=getattr(output, "sequences_scores", None),
            scorer_scores=getattr(output, "scorer_scores", None), token_spans=spans,
        )  # fmt: skip

    @torch.no_grad()
    def _long_form(self, input_features, attention_mask, segment_seconds: float, segment_normalization=None,
                   return_token_spans: bool = False, tokenizer=None, **generate_kwargs):  # fmt: skip
        """Recordings longer than 1.5 segments: each is cut at pauses (runs of CTC blanks, found by the CTC head over
        overlapping windows) into segments of at most `segment_seconds`, the segments of the whole batch are decoded
        16 at a time the way the options say (every search and LM), and each recording's segments are joined (a
        space between them). The decoder never sees more than a segment, so no transcript meets its length limit.

        `segment_normalization="utterance"` (the pipeline passes its feature extractor's) normalises each segment's
        features over the segment, as the model saw sentences in training: mean and variance over minutes of
        recording and pauses are not a sentence's (6 points of CER on the demo's model).

        With `return_token_spans`, each segment's transcript is aligned with the segment (`align`) and its frames are
        moved to the recording's, a space between segments (at the pause) where the tokenizer has one."""
        c = self.config
        if generate_kwargs.get("synced_gpus"):
            raise ValueError("long recordings are decoded in as many segments as they have pauses, which differs from "
                             "process to process: synced_gpus is not supported for them (cut them first)")  # fmt: skip
        lengths = frame_lengths(input_features, attention_mask).tolist()
        config = generate_kwargs.get("generation_config") or self.generation_config
        if (generate_kwargs.get("num_return_sequences") or config.num_return_sequences or 1) > 1:
            raise ValueError("long recordings are decoded segment by segment into one transcript each: "
                             "num_return_sequences must be 1")  # fmt: skip
        reduction = round(self.frame_seconds / 0.01)  # input frames per encoder frame; segments start at multiples
        pieces = [(b, start // reduction, input_features[b, start:end])
                  for b, spans in enumerate(self.long_form_segments(input_features, attention_mask, segment_seconds))
                  for start, end in spans]  # fmt: skip
        if segment_normalization == "utterance":  # an utterance's CMVN is affine: exact on features normalised before
            pieces = [(b, offset, (x - x.mean(0)) / x.std(0, correction=0).clamp(min=STD_FLOOR))
                      for b, offset, x in pieces]  # fmt: skip
        elif segment_normalization not in (None, "none", "global"):
            raise ValueError("segment_normalization must be 'utterance', 'global', 'none' or None, got "
                             f"{segment_normalization!r}")
        return_dict = generate_kwargs.pop("return_dict_in_generate", None)
        return_dict = return_dict or getattr(config, "return_dict_in_generate", False) or return_token_spans
        generate_kwargs["return_dict_in_generate"] = False
        transcripts = [[] for _ in lengths]  # per recording, per segment: (tokens, spans in the recording's frames)
        specials = {c.decoder_start_token_id, c.eos_token_id, c.pad_token_id}
        for i in range(0, len(pieces), 16):
            batch = [segment for _, _, segment in pieces[i : i + 16]]
            mask = torch.zeros(len(batch), max(map(len, batch)), dtype=torch.long, device=input_features.device)
            for row, segment in zip(mask, batch):
                row[: len(segment)] = 1
            padded = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True)
            sequences = self.generate(padded, attention_mask=mask, segment_seconds=float("inf"), tokenizer=tokenizer,
                                      **generate_kwargs)  # fmt: skip
            spans = self._align_where_possible(padded, sequences, mask) if return_token_spans else [[]] * len(batch)
            for (b, offset, _), row, aligned in zip(pieces[i : i + 16], sequences.tolist(), spans):
                moved = [(token, start + offset, end + offset) for token, start, end in aligned]
                transcripts[b].append(([t for t in row if t not in specials], moved))
        space = self._space_token(tokenizer)
        joined, joined_spans = [], []
        for segments in transcripts:
            tokens, token_spans = [], []
            for segment, aligned in (s for s in segments if s[0]):
                if tokens and space is not None:  # the space between two segments, at the pause between them
                    tokens.append(space)
                    if aligned and token_spans:
                        token_spans.append((space, token_spans[-1][2], aligned[0][1]))
                tokens += segment
                token_spans += aligned
            joined.append([c.decoder_start_token_id, *tokens, c.eos_token_id])
            joined_spans.append(token_spans)
        width = max(map(len, joined))
        sequences = torch.tensor([row + [c.pad_token_id] * (width - len(row)) for row in joined],
                                 device=input_features.device)  # fmt: skip
        if not return_dict:
            return sequences
        return SpeechSeqGenerateOutput(sequences=sequences, token_spans=joined_spans if return_token_spans else None)

    @torch.no_grad()
    def long_form_segments(self, input_features, attention_mask=None, segment_seconds: float = SEGMENT_SECONDS,
                           min_pause: float = 0.3, margin: float = 0.1, min_speech: float = 0.1) -> list:  # fmt: skip
        """Where `generate()` cuts long recordings: per recording, `(start, end)` input frames of segments of at most
        `segment_seconds`, cut at every pause of `min_pause` seconds or more and in pauses within longer stretches
        (`silence_segments` over the CTC head's best path, computed over windows of `segment_seconds` with 2 s of
        context on each side, so that every frame hears its surroundings and memory does not grow with the
        recording), each then trimmed to its speech and `margin` seconds of pause on each side (`trim_pauses`; a
        stretch in which the CTC head hears less than `min_speech` seconds of speech is not decoded)."""
        c = self.config
        reduction = 2 if c.encoder_type == "whisper" else c.subsampling_factor
        max_frames = max(2, int(segment_seconds / self.frame_seconds))
        window, context = max_frames * reduction, int(2.0 / 0.01)  # in input frames (10 ms)
        all_spans = []
        for b, n in enumerate(frame_lengths(input_features, attention_mask).tolist()):
            is_blank = []
            for start in range(0, n, window):
                left, right = max(0, start - context), min(n, start + window + context)
                encoded, _ = self.encode(input_features[b : b + 1, left:right])
                best = self.ctc_log_probs(encoded)[0].argmax(-1)
                first = (start - left) // reduction
                count = (min(n, start + window) - start + reduction - 1) // reduction
                is_blank += (best[first : first + count] == c.blank_token_id).tolist()
            segments = silence_segments(is_blank, max_frames, min_pause=max(2, round(min_pause / self.frame_seconds)))
            segments = trim_pauses(segments, is_blank, margin=round(margin / self.frame_seconds),
                                   min_speech=max(1, math.ceil(min_speech / self.frame_seconds - 1e-9)))
            spans = [(a * reduction, min(n, e * reduction)) for a, e in segments]
            all_spans.append([(a, e) for a, e in spans if e - a >= max(1, c.min_input_frames)])
        return all_spans

    def _space_token(self, tokenizer) -> int | None:
        """The token between two words of a character tokenizer (None for BPE, whose pieces start words)."""
        if tokenizer is None:
            if not os.path.isdir(self.name_or_path):
                raise ValueError("joining the segments of a long recording needs the tokenizer: pass tokenizer=, or "
                                 "load the model from a directory that holds it")  # fmt: skip
            tokenizer = self._load(("tokenizer", self.name_or_path), lambda: load_tokenizer(self.name_or_path))
        space = tokenizer.convert_tokens_to_ids(" ")
        return None if space == tokenizer.unk_token_id else space

    def _warn_if_cut(self, sequences: torch.LongTensor, max_new_tokens: int) -> None:
        """Say which transcripts stopped at the length limit rather than at `[EOS]`: never truncate silently."""
        cut = ~(sequences == self.config.eos_token_id).any(dim=1)
        if cut.any():
            logger.warning("transcripts %s of this batch reached the limit of %d new tokens without [EOS]: they may "
                           "be cut short (raise max_new_tokens, or split the audio)", cut.nonzero().flatten().tolist(),
                           max_new_tokens)  # fmt: skip

    def _in_model_dir(self, path) -> str:
        """A relative path saved in the generation config names a file (the n-gram LM) or a directory (the fusion
        LM) inside the model's directory."""
        if os.path.isabs(path) or not os.path.isdir(self.name_or_path):
            return path
        return os.path.join(self.name_or_path, path)

    def _word_scorers(self, ngram_lm, tokenizer, options: BeamSearchOptions, decoding: str) -> dict:
        """The n-gram LM's scorer and the word bonus, as the options ask for them (loaded once per file)."""
        if not options.ngram_weight and not options.word_bonus:
            return {}
        if not options.ngram_weight and decoding == "ctc":
            raise ValueError("the CTC prefix search counts words for the n-gram LM only: word_bonus needs "
                             "ngram_weight > 0")
        if tokenizer is None:
            if not os.path.isdir(self.name_or_path):
                raise ValueError("the n-gram LM reads tokens as words: pass tokenizer= (the model's tokenizer), or "
                                 "load the model from a directory that holds it")  # fmt: skip
            tokenizer = self._load(("tokenizer", self.name_or_path), lambda: load_tokenizer(self.name_or_path))
        if len(tokenizer) != self.config.vocab_size:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, the model {self.config.vocab_size}")
        pieces = word_pieces(tokenizer)
        scorers = {"word_bonus": WordBonus(pieces, self.config.eos_token_id)} if options.word_bonus else {}
        if options.ngram_weight:
            if not isinstance(ngram_lm, WordLanguageModel):
                path = os.path.abspath(ngram_lm)
                ngram_lm = self._load(("ngram", path), lambda: WordLanguageModel(path))
            ngram_lm.check_spelling(pieces)
            scorers["ngram"] = NgramScorer(ngram_lm, pieces, self.config.eos_token_id, options.unk_penalty)
        return scorers

    @torch.no_grad()
    def align(self, input_features, labels, attention_mask=None) -> list[list[tuple[int, int, int]]]:
        """Where each token of known transcripts is spoken: the CTC head's Viterbi alignment (`ctc_forced_align`).

        Args:
            input_features (`torch.FloatTensor` of shape `(batch, frames, num_mel_bins)`), attention_mask: as for
                `generate`.
            labels (`torch.LongTensor` of shape `(batch, tokens)`): the transcripts, as the processor gives them
                (`[EOS]`, padding and -100 are skipped).

        Returns:
            per utterance, `(token_id, start_frame, end_frame)` of each token in encoder frames (end exclusive; one
            frame is `self.frame_seconds` long); `timestamp_chunks` turns them into words or characters with times.
        """
        c = self.config
        specials = torch.tensor([c.eos_token_id, c.pad_token_id, c.decoder_start_token_id, c.blank_token_id, -100],
                                device=labels.device)  # fmt: skip
        transcripts = [row[~torch.isin(row, specials)] for row in labels]
        label_lengths = torch.tensor([len(t) for t in transcripts], device=labels.device)
        padded = torch.zeros(len(transcripts), max(1, int(label_lengths.max())), dtype=torch.long, device=labels.device)
        for row, transcript in zip(padded, transcripts):
            row[: len(transcript)] = transcript
        encoder_hidden_states, lengths = self.encode(input_features, attention_mask)
        positions, _ = ctc_forced_align(self.ctc_log_probs(encoder_hidden_states), lengths, padded, label_lengths,
                                        c.blank_token_id)  # fmt: skip
        spans = []
        for transcript, frames in zip(transcripts, positions):
            starts = torch.full((len(transcript),), -1, dtype=torch.long)
            ends = torch.zeros(len(transcript), dtype=torch.long)
            for t, position in enumerate(frames.tolist()):
                if position >= 0:
                    starts[position] = t if starts[position] < 0 else starts[position]
                    ends[position] = t + 1
            spans.append([(int(token), int(a), int(b)) for token, a, b in zip(transcript, starts, ends)])
        return spans

    def _align_where_possible(self, input_features, sequences, attention_mask) -> list[list[tuple[int, int, int]]]:
        """`align` for decoded sequences: a transcript the CTC head cannot align (more labels than the audio has
        frames for) gets no spans and a warning, and the rest of the batch keeps theirs."""
        try:
            return self.align(input_features, sequences, attention_mask)
        except ValueError:
            spans, failed = [], []
            for i in range(len(sequences)):
                try:
                    mask = None if attention_mask is None else attention_mask[i : i + 1]
                    spans += self.align(input_features[i : i + 1], sequences[i : i + 1], mask)
                except ValueError:
                    spans.append([])
                    failed.append(i)
            logger.warning("no timestamps for transcripts %s of this batch: longer than the CTC head can align with "
                           "their audio", failed)  # fmt: skip
            return spans

    @property
    def frame_seconds(self) -> float:
        """The duration of one encoder frame: 10 ms feature frames times the front end's time reduction."""
        reduction = 2 if self.config.encoder_type == "whisper" else self.config.subsampling_factor
        return reduction * 0.01

    def timestamps(self, input_features, labels, tokenizer, attention_mask=None, level: str = "word") -> list[list[dict]]:
        """`align`, then per utterance `[{"text", "timestamp": (start, end)}]` in seconds per word or character, as
        transformers' ASR pipeline returns timestamps."""
        pieces = word_pieces(tokenizer)
        return [timestamp_chunks(spans, pieces, self.frame_seconds, level)
                for spans in self.align(input_features, labels, attention_mask)]  # fmt: skip

    def _load(self, key: tuple, load):
        """`load()` once per key: generate() is called batch after batch with the same paths."""
        if key not in self._loaded:
            self._loaded[key] = load()
        return self._loaded[key]

    def _max_new_tokens(self, kwargs: dict, config: GenerationConfig) -> int:
        """New tokens to allow: `max_new_tokens`, else `max_length - 1`, else all; never past the decoder's length."""
        limit = self.config.max_target_positions - 1
        max_new_tokens = kwargs.pop("max_new_tokens", None) or config.max_new_tokens
        max_length = kwargs.pop("max_length", None) or config.max_length
        if max_new_tokens is None:
            max_new_tokens = max_length - 1 if max_length else limit
        return max(1, min(max_new_tokens, limit))

    def _fusion_lm(self, lm, lm_weight: float):
        """The language model to fuse (loaded once per directory), checked against this model's tokens."""
        if lm is None or lm_weight == 0:
            return None
        if isinstance(lm, (str, os.PathLike)):
            lm = self._load(("lm", str(lm)), lambda: AutoModelForCausalLM.from_pretrained(lm))
        check_fusion_lm(lm, self.config)
        return lm.to(self.device).eval()

    @torch.no_grad()
    def _joint_search(self, input_features, attention_mask, options: BeamSearchOptions, lm, extra_scorers: dict,
                      synced_gpus: bool = False) -> SpeechSeqGenerateOutput:  # fmt: skip
        encoder_hidden_states, lengths = self.encode(input_features, attention_mask)
        T = encoder_hidden_states.shape[1]
        encoder_mask = None if attention_mask is None else lengths_to_mask(lengths, T)
        c = self.config
        scorers = {"decoder": DecoderScorer(self, encoder_hidden_states, encoder_mask, options.repetition_penalty)}
        weights = {"decoder": 1.0 - options.ctc_weight, "ctc": options.ctc_weight, "lm": options.lm_weight,
                   "length_bonus": options.length_bonus, "ngram": options.ngram_weight,
                   "word_bonus": options.word_bonus, "constraints": 1.0}  # fmt: skip
        if options.ctc_weight:
            scorers["ctc"] = CTCPrefixScorer(self.ctc_log_probs(encoder_hidden_states), lengths, c.blank_token_id,
                                             c.eos_token_id, (c.pad_token_id, c.decoder_start_token_id))  # fmt: skip
        if lm is not None:
            scorers["lm"] = LMScorer(lm)
        if options.length_bonus:
            scorers["length_bonus"] = LengthBonus(c.vocab_size)
        scorers.update(extra_scorers)
        # CTC gives every token a frame of its own: no transcript is longer than the encoder's frames (plus [EOS]).
        limits = (lengths + 1).clamp(max=options.max_new_tokens)
        output = beam_search(
            scorers, weights, len(lengths), limits, options,
            c.decoder_start_token_id, c.eos_token_id, c.pad_token_id, c.vocab_size, encoder_hidden_states.device,
            synced_gpus,
        )  # fmt: skip
        return SpeechSeqGenerateOutput(
            sequences=output.sequences, sequences_scores=output.sequences_scores, scorer_scores=output.scorer_scores
        )

    @torch.no_grad()
    def _ctc_search(self, input_features, attention_mask, options: BeamSearchOptions, words: dict,
                    suppress_tokens=()) -> SpeechSeqGenerateOutput:  # fmt: skip
        """The CTC head alone: the best path (one beam, no n-gram LM; repeats merged, blanks dropped) or prefix beam
        search (with the n-gram LM and word bonus when `words` has them); `suppress_tokens` never emitted."""
        encoder_hidden_states, lengths = self.encode(input_features, attention_mask)
        log_probs = self.ctc_log_probs(encoder_hidden_states)
        c = self.config
        never = {c.pad_token_id, c.decoder_start_token_id, c.eos_token_id, *suppress_tokens} - {c.blank_token_id}
        excluded = sorted(never)
        log_probs[..., excluded] = NEG_INF
        if options.num_beams == 1 and not words:
            best = log_probs.argmax(dim=-1)  # (B, frames)
            keep = (best != c.blank_token_id) & lengths_to_mask(lengths, best.shape[1])
            keep[:, 1:] &= best[:, 1:] != best[:, :-1]  # a repeat merges with the frame before it
            labels = [row[k].tolist() for row, k in zip(best, keep)]
            scores = [None] * len(labels)
        else:
            nbest, nbest_scores = ctc_prefix_beam_search(
                log_probs, lengths, options.num_beams, c.blank_token_id, excluded, options.num_return_sequences,
                words.get("ngram"), options.ngram_weight, options.word_bonus,
            )  # fmt: skip
            labels = [y for hypotheses in nbest for y in hypotheses]
            scores = [score for hypotheses in nbest_scores for score in hypotheses]
        # a CTC transcript longer than the limit is cut and left without [EOS], so that the caller is told
        sequences = [[c.decoder_start_token_id, *y, c.eos_token_id] if len(y) < options.max_new_tokens
                     else [c.decoder_start_token_id, *y[: options.max_new_tokens]] for y in labels]  # fmt: skip
        width = max(map(len, sequences))
        padded = [y + [c.pad_token_id] * (width - len(y)) for y in sequences]
        sequences_scores = None if scores[0] is None else torch.tensor(scores, device=log_probs.device)
        return SpeechSeqGenerateOutput(
            sequences=torch.tensor(padded, device=log_probs.device), sequences_scores=sequences_scores,
            scorer_scores=None if sequences_scores is None or words else {"ctc": sequences_scores},
        )  # fmt: skip

