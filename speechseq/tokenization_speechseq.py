"""Text normalisation and `tokenizers`-backed character or BPE tokenizers with the assignment's special tokens."""

import os
import re
import unicodedata

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "normalize_text", "train_tokenizer", "load_tokenizer", "special_token_ids",
           "suppressed_token_ids"]

# The assignment's H4Tokenizer convention, in id order: [PAD]=0 [UNK]=1 [MASK]=2 [SOS]=3 [EOS]=4 [BLANK]=5.
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[MASK]", "[SOS]", "[EOS]", "[BLANK]"]
_SPECIAL_TOKEN_ROLES = dict(
    pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]", bos_token="[SOS]", eos_token="[EOS]"
)

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
        "seventeen eighteen nineteen".split()  # fmt: skip
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = [(10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")]
_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
             "nine": "ninth", "twelve": "twelfth"}  # fmt: skip


def _cardinal(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for scale, name in _SCALES:
        if n >= scale:
            rest = n % scale
            return f"{_cardinal(n // scale)} {name}" + ("" if rest == 0 else " " + _cardinal(rest))
    raise AssertionError(n)


def _ordinal(n: int) -> str:
    *head, last = _cardinal(n).split()
    last = _ORDINALS.get(last) or (last[:-1] + "ieth" if last.endswith("y") else last + "th")
    return " ".join([*head, last])


def _spell_number(match: re.Match) -> str:
    digits, fraction, suffix = match.group(1).replace(",", ""), match.group(2), match.group(3)
    if len(digits) > 12:  # a serial number, not a quantity: read digit by digit
        return " " + " ".join(_ONES[int(d)] for d in digits) + " "
    words = _ordinal(int(digits)) if suffix else _cardinal(int(digits))
    if fraction:
        words += " point " + " ".join(_ONES[int(d)] for d in fraction)
    return f" {words} "


def normalize_text(text: str) -> str:
    """The one text normalisation of speechseq, applied to training transcripts, labels and metric references.

    Unicode is decomposed and accents dropped; letters are lower-cased; numbers are spelled out as spoken ("42" ->
    "forty two", "3.5" -> "three point five", "21st" -> "twenty first"); "&" and "%" become "and" and "percent";
    apostrophes are kept inside words ("don't") and dropped elsewhere; every other character becomes a space; runs
    of spaces collapse to one. The result uses only `a-z`, `'` and the space.

    >>> normalize_text("Hello, World! It's 4:30 -- café & 2nd")
    "hello world it's four thirty cafe and second"
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = text.replace("\u2019", "'").replace("&", " and ").replace("%", " percent ")
    text = re.sub(r"(\d[\d,]*)(?:\.(\d+))?(st|nd|rd|th)?", _spell_number, text)
    text = re.sub(r"[^a-z' ]+", " ", text)
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)
    return " ".join(text.split())


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """A `PreTrainedTokenizerFast` with speechseq's special tokens, appending [EOS] to every encoded text."""
    missing = [token for token in SPECIAL_TOKENS if tokenizer.token_to_id(token) is None]
    if missing:
        raise ValueError(f"the tokenizer lacks the special tokens {missing}; speechseq needs all of {SPECIAL_TOKENS}")
    eos = "[EOS]"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A $B {eos}", special_tokens=[(eos, tokenizer.token_to_id(eos))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        extra_special_tokens=["[BLANK]"],
        clean_up_tokenization_spaces=False,
        **_SPECIAL_TOKEN_ROLES,
    )


def train_tokenizer(texts, kind: str = "char", vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """Train a character or BPE tokenizer on `texts`, normalised with [`normalize_text`].

    Args:
        texts (iterable of `str`): training transcripts (read once, streamed).
        kind (`str`, defaults to `"char"`): `"char"` (one token per character) or `"bpe"` (SentencePiece-style BPE
            over words, `▁` marking word starts).
        vocab_size (`int`, *optional*): BPE vocabulary size including the 6 special tokens (default 1000; the
            assignment uses 1000, 5000 and 10000). Not used by `"char"`.

    Returns:
        `PreTrainedTokenizerFast` that appends `[EOS]` to each text, has the special tokens of [`SPECIAL_TOKENS`]
        at ids 0 to 5, and saves and loads with `save_pretrained` / `AutoTokenizer.from_pretrained`.

    Example:

    ```python
    >>> tokenizer = train_tokenizer(["Hello world", "good bye"], kind="char")
    >>> tokenizer.decode(tokenizer("hello").input_ids, skip_special_tokens=True)
    'hello'
    ```
    """
    normalized = (normalize_text(text) for text in texts)
    if kind == "char":
        if vocab_size is not None:
            raise ValueError("vocab_size applies to kind='bpe' only; a char tokenizer has one token per character")
        characters = sorted(set().union(*map(set, normalized)))
        vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + characters)}
        tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
        tokenizer.decoder = decoders.Fuse()
    elif kind == "bpe":
        vocab_size = 1000 if vocab_size is None else vocab_size
        if not isinstance(vocab_size, int) or vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size must be an integer above {len(SPECIAL_TOKENS)}, got {vocab_size!r}")
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
        tokenizer.train_from_iterator(normalized, trainer)
    else:
        raise ValueError(f"kind must be 'char' or 'bpe', got {kind!r}")
    return _wrap(tokenizer)


def load_tokenizer(path) -> PreTrainedTokenizerFast:
    """Load a speechseq tokenizer from a `save_pretrained` directory, or a `tokenizers` JSON file such as the
    assignment's `tokenizer_char.json` / `tokenizer_1k.json` (it must hold the six special tokens).

    Raises:
        ValueError: when the path is missing or the file lacks a special token.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return AutoTokenizer.from_pretrained(path)
    if not os.path.isfile(path):
        raise ValueError(f"tokenizer {path} does not exist")
    return _wrap(Tokenizer.from_file(path))


def special_token_ids(tokenizer) -> dict:
    """The config fields that must agree with `tokenizer`: `vocab_size` and the special token ids.

    >>> config = SpeechSeqConfig.from_preset("tiny", **special_token_ids(tokenizer))  # doctest: +SKIP
    """
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("pad_token_id", "[PAD]"), ("bos_token_id", "[SOS]"), ("eos_token_id", "[EOS]"),
        ("decoder_start_token_id", "[SOS]"), ("blank_token_id", "[BLANK]"),
    )}  # fmt: skip
    return {"vocab_size": len(tokenizer), **ids}


def suppressed_token_ids(tokenizer) -> list[int]:
    """The special tokens no transcript contains (all but `[EOS]`): a model's `generation_config.suppress_tokens`,
    so that no search spends a beam on a token that decodes to nothing. A decoder trained with label smoothing gives
    each of them about `label_smoothing / vocab_size`, as likely as a plausible letter, and a word LM charges them
    nothing: a 4-beam search with the n-gram LM held hypotheses such as `[UNK] mean` beside ` mean`."""
    return sorted(set(tokenizer.all_special_ids) - {tokenizer.convert_tokens_to_ids("[EOS]")})
