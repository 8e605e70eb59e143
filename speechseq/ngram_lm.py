"""Word n-gram language models: estimated by KenLM's `lmplz`, queried through KenLM's Python module, fused into
speechseq's searches by `generate(ngram_lm=..., ngram_weight=...)`.

A word LM fixes spelling, which a character model's own decoder and a character LM barely do, and it is built in
seconds on a CPU. The estimator is KenLM's (modified Kneser-Ney, the field's standard; `make kenlm` builds `lmplz`
and `build_binary` from the sources in the `kenlm` package on PyPI into the virtual environment's `bin/`); the
queries are KenLM's own (`kenlm.Model`, ARPA or binary). speechseq adds what the searches need around it: the
vocabulary as a set of words and of word prefixes (for the penalty on spellings of no known word, as pyctcdecode
does), natural-log scores, and a cache of word scores per context.
"""

import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .tokenization_speechseq import normalize_text

__all__ = ["WordLanguageModel", "train_ngram_lm", "write_binary", "is_binary", "find_kenlm_program", "word_pieces"]

logger = logging.getLogger(__name__)

LOG_10 = math.log(10.0)  # KenLM scores in log10; the searches add natural logs
SENTENCE_MARKERS = {"<s>", "</s>", "<unk>"}
_BINARY_MAGIC = b"mmap lm "  # the first bytes of a KenLM binary model


def find_kenlm_program(name: str) -> str:
    """The path of KenLM's `lmplz` or `build_binary`: in `$KENLM_BIN`, beside this Python (the virtual
    environment's `bin/`, where `make kenlm` puts them), or on the `PATH`.

    Raises:
        FileNotFoundError: saying how to build them.
    """
    candidates = [Path(os.environ["KENLM_BIN"]) / name] if os.environ.get("KENLM_BIN") else []
    candidates.append(Path(sys.prefix) / "bin" / name)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"KenLM's {name} is not installed (looked in $KENLM_BIN, {Path(sys.prefix) / 'bin'} and the PATH): "
            "`make kenlm` builds it from the kenlm package's sources (needs cmake, g++ and Debian's "
            "libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev)"
        )
    return found


def train_ngram_lm(texts, path, order: int = 4, prune: tuple[int, ...] | None = None, binary: bool = False) -> Path:
    """Estimate a word n-gram LM with modified Kneser-Ney smoothing (KenLM's `lmplz`) and write it as ARPA.

    Args:
        texts (iterable of `str`): sentences, passed through [`normalize_text`] as the transcripts are (empty ones
            are skipped).
        path (`str` or `os.PathLike`): the ARPA file to write (its directory is made).
        order (`int`, defaults to 4): the n of the n-grams.
        prune (`tuple[int]`, *optional*): `lmplz --prune`, count thresholds per order (e.g. `(0, 0, 1)`).
        binary (`bool`, defaults to `False`): also write KenLM's binary format next to it (`<path>.bin`, with the
            vocabulary in `<path>.bin.vocab`: [`write_binary`]), which loads faster.

    Returns:
        `Path` of the ARPA file.

    Raises:
        ValueError: no text, or an order below 1.
        RuntimeError: `lmplz` failed (its message included).
    """
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lmplz = find_kenlm_program("lmplz")
    with tempfile.TemporaryDirectory() as scratch:
        text_file = Path(scratch) / "text.txt"
        sentences = 0
        with open(text_file, "w", encoding="utf-8") as out:
            for text in texts:
                if normalized := normalize_text(text):
                    out.write(normalized + "\n")
                    sentences += 1
        if sentences == 0:
            raise ValueError("no text to build the n-gram LM from (every sentence is empty after normalize_text)")
        # --discount_fallback: small texts lack the counts-of-counts that the discounts are estimated from
        command = [lmplz, "-o", str(order), "--text", str(text_file), "--arpa", str(path), "-S", "10%",
                   "-T", scratch, "--discount_fallback"]  # fmt: skip
        if prune:
            command += ["--prune", *map(str, prune)]
        _run(command)
    logger.info("%d-gram LM of %d sentences written to %s", order, sentences, path)
    if binary:
        write_binary(path, path.with_name(path.name + ".bin"))
    return path


def write_binary(arpa, path) -> Path:
    """Write an ARPA LM in KenLM's binary trie format (`build_binary trie`; the same scores), with its vocabulary
    beside it in `<path>.vocab`, which [`WordLanguageModel`] reads with it. The demo's 4-gram: 44 MB against 111 MB
    of ARPA, loaded in 0.7 s against 2.6 s.

    Returns:
        `Path` of the binary file.
    """
    arpa, path = Path(arpa), Path(path)
    words = _arpa_unigrams(arpa)
    path.parent.mkdir(parents=True, exist_ok=True)
    _run([find_kenlm_program("build_binary"), "trie", str(arpa), str(path)])
    path.with_name(path.name + ".vocab").write_text("\n".join(words) + "\n", encoding="utf-8")
    return path


def is_binary(path) -> bool:
    """Whether `path` is a KenLM binary model (else ARPA, or not an LM)."""
    with open(path, "rb") as head:
        return head.read(len(_BINARY_MAGIC)) == _BINARY_MAGIC


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")


def _arpa_unigrams(path: Path) -> list[str]:
    """The words of an ARPA file's 1-gram section.

    Raises:
        ValueError: naming the file, when it is not ARPA (no `\\data\\` header or no 1-gram section).
    """
    words = []
    with open(path, encoding="utf-8", errors="strict") as lines:
        header = next((line.strip() for line in lines if line.strip()), "")
        if header != "\\data\\":
            raise ValueError(f"{path} is not an ARPA language model: it starts with {header[:40]!r}, not '\\data\\'")
        for line in lines:
            if line.startswith("\\1-grams:"):
                break
        else:
            raise ValueError(f"{path} is not an ARPA language model: it has no \\1-grams: section")
        for line in lines:
            line = line.strip()
            if not line:
                continue
            if line.startswith("\\"):
                break
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) < 2:
                raise ValueError(f"{path}: malformed 1-gram line {line[:60]!r}")
            words.append(fields[1])
    return words


class WordLanguageModel:
    """A word n-gram LM (ARPA, or KenLM binary with its `.vocab` file beside it) as the searches use it.

    Scores are natural logs. `score_word(state, word)` and `score_end(state)` take and give KenLM states, cached per
    (state, word): in a beam search the same few contexts ask for the same words many times. `prefixes` maps each
    prefix of a known word to ln of the unigram probability of the words it begins (the searches' look-ahead);
    `unk_unigram` is ln p(<unk>).

    Raises:
        ValueError: naming the file, when it is missing or not a language model KenLM reads.
    """

    def __init__(self, path):
        import kenlm  # the query module: `pip install kenlm`, a dependency of speechseq

        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"n-gram language model {self.path} does not exist")
        if is_binary(self.path):
            vocabulary_file = self.path.with_name(self.path.name + ".vocab")
            if not vocabulary_file.is_file():
                raise ValueError(f"{self.path} is a KenLM binary model without its vocabulary {vocabulary_file} "
                                 "(one word per line; train_ngram_lm(binary=True) writes it): give the ARPA file")  # fmt: skip
            words = vocabulary_file.read_text(encoding="utf-8").split()
        else:
            try:
                words = _arpa_unigrams(self.path)
            except UnicodeDecodeError as error:
                raise ValueError(f"{self.path} is not an ARPA language model (not UTF-8 text: {error})") from None
        config = kenlm.Config()
        config.show_progress = False
        try:
            self.model = kenlm.Model(str(self.path), config)
        except (OSError, RuntimeError) as error:
            raise ValueError(f"KenLM cannot read {self.path}: {error}") from None
        self._kenlm = kenlm
        self.order = self.model.order
        self.words = frozenset(words) - SENTENCE_MARKERS
        # the look-ahead of a partial word: ln of the unigram probability mass of the words it begins
        null, after = kenlm.State(), kenlm.State()
        self.model.NullContextWrite(null)
        mass: dict[str, float] = {}
        for word in self.words:
            probability = 10.0 ** self.model.BaseScore(null, word, after)
            for i in range(1, len(word) + 1):
                mass[word[:i]] = mass.get(word[:i], 0.0) + probability
        self.prefixes = {prefix: math.log(total) for prefix, total in mass.items()}
        self.unk_unigram = self.model.BaseScore(null, "<unk>", after) * LOG_10
        self._words_cache: dict = {}
        self._end_cache: dict = {}
        self._spelling_checked: set[frozenset] = set()  # character sets already checked

    def __repr__(self):
        return f"WordLanguageModel({str(self.path)!r}, order={self.order}, words={len(self.words)})"

    def begin(self):
        """The state at the start of a sentence (after `<s>`)."""
        state = self._kenlm.State()
        self.model.BeginSentenceWrite(state)
        return state

    def score_word(self, state, word: str):
        """(ln p(word | state), the state after it); unknown words get KenLM's `<unk>` probability."""
        key = (state, word)
        if key not in self._words_cache:
            after = self._kenlm.State()
            self._words_cache[key] = (self.model.BaseScore(state, word, after) * LOG_10, after)
        return self._words_cache[key]

    def score_end(self, state) -> float:
        """ln p(</s> | state)."""
        if state not in self._end_cache:
            self._end_cache[state] = self.model.BaseScore(state, "</s>", self._kenlm.State()) * LOG_10
        return self._end_cache[state]

    def check_spelling(self, pieces: list) -> None:
        """Raise a `ValueError` when most of the LM's words use characters the ASR model never writes (an upper-case
        LM for a lower-case model, say): such an LM would score every hypothesis as unknown words."""
        characters = frozenset().union(*(set(piece[1]) for piece in pieces if piece is not None))
        if characters in self._spelling_checked:
            return
        foreign = [word for word in self.words if not set(word) <= characters]
        if self.words and len(foreign) > len(self.words) / 2:
            missing = sorted(set().union(*map(set, foreign)) - characters)
            raise ValueError(
                f"the n-gram LM {self.path} spells {len(foreign)} of its {len(self.words)} words with characters the "
                f"ASR model never writes ({''.join(missing[:20])!r}; e.g. {sorted(foreign)[:3]}): build it from text "
                "passed through speechseq.normalize_text, as the transcripts are (train_ngram_lm does)"
            )
        if foreign:
            logger.warning("%d of the n-gram LM's %d words use characters the ASR model never writes; they cannot be "
                           "recognised", len(foreign), len(self.words))  # fmt: skip
        self._spelling_checked.add(characters)


def word_pieces(tokenizer) -> list:
    """Per token id: `None` for a special token, else `(starts_word, text)`: a space token (character tokenizers)
    is `(True, "")`, a BPE piece `▁word` is `(True, "word")`, any other token `(False, its text)`."""
    special = set(tokenizer.all_special_ids)
    pieces = []
    for token_id in range(len(tokenizer)):
        token = tokenizer.convert_ids_to_tokens(token_id)
        if token_id in special or token is None:
            pieces.append(None)
        elif token == " ":
            pieces.append((True, ""))
        elif token.startswith("▁"):
            pieces.append((True, token[1:]))
        else:
            pieces.append((False, token))
    return pieces
