"""English sentences that install offline: Debian's fortunes, WordNet's gloss examples, (optionally) the KJV, and for
language models GCIDE's definitions and quotations."""

import gzip
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from ..tokenization_speechseq import normalize_text

__all__ = ["ensure_debian_packages", "fortune_sentences", "wordnet_examples", "bible_verses", "dictionary_sentences",
           "corpus_sentences", "lm_sentences"]

logger = logging.getLogger(__name__)

FORTUNES_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
GCIDE_FILE = Path("/usr/share/dictd/gcide.dict.dz")  # Debian's dict-gcide
MIN_WORDS, MAX_WORDS = 3, 24
# the reference `bible -f` starts each line with: "Ge1:1 ", "1Sm1:1 ", "SSol1:1 " (or "Gen 1:1 " elsewhere)
VERSE_REFERENCE = re.compile(r"^[1-3]?[A-Za-z]+\s*\d+:\d+\s*")


def ensure_debian_packages(packages: dict[str, str]) -> list[str]:
    """Install the Debian packages whose marker path (`{package: path}`) is missing, with apt-get.

    Returns the packages still missing afterwards (apt-get absent, or not root); the caller decides what to do.
    """
    missing = [package for package, marker in packages.items() if not (shutil.which(marker) or os.path.exists(marker))]
    if missing and shutil.which("apt-get") and os.geteuid() == 0:
        logger.info("installing %s with apt-get", " ".join(missing))
        subprocess.run(["apt-get", "update", "-qq"], check=False, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=False, stdout=subprocess.DEVNULL)
        missing = [p for p in missing if not (shutil.which(packages[p]) or os.path.exists(packages[p]))]
    return missing


def _keep(sentence: str) -> str | None:
    """The normalised sentence when it reads as plain English prose of a speakable length, else None."""
    if not sentence.isascii() or re.search(r"[<>{}\[\]|@#$^*_=~\\/]|https?:", sentence):
        return None  # code, markup, ascii art, addresses
    normalized = normalize_text(sentence)
    words = normalized.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or max(map(len, words)) > 18:
        return None
    return normalized


def _sentences(text: str):
    text = " ".join(text.split())
    # a sentence ends at . ! or ?, but not after an initial ("H. L. Mencken") or a title ("Mr. Smith")
    for sentence in re.split(r"(?<!\b[A-Z]\.)(?<!\b(?:Mr|Dr|St|Jr|Sr|vs)\.)(?<!\bMrs\.)(?<=[.!?])\s+", text):
        if sentence:
            yield sentence


def fortune_sentences(directory: Path = FORTUNES_DIR):
    """Sentences from the fortune cookie files (cookies separated by `%` lines; attributions dropped)."""
    for path in sorted(directory.glob("*")):
        if path.suffix or not path.is_file():  # skip the .dat indexes and .u8 links
            continue
        for cookie in path.read_text(encoding="utf-8", errors="ignore").split("\n%\n"):
            lines = [
                re.sub(r"""(["'.!?])\s+--?\s+[A-Z].*$""", r"\1", line)  # `..." - H. L. Mencken`
                for line in cookie.splitlines()
                if not line.strip().startswith("-")  # `\t\t-- Mark Twain`
            ]
            for sentence in _sentences("\n".join(lines)):
                if (kept := _keep(sentence)) is not None:
                    yield kept


def wordnet_examples(directory: Path = WORDNET_DIR):
    """The quoted usage examples of WordNet's glosses ("she was able to program her computer")."""
    for part in ("noun", "verb", "adj", "adv"):
        path = directory / f"data.{part}"
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8", errors="ignore").splitlines():
            if line.startswith("  ") or "|" not in line:  # the license header
                continue
            for example in re.findall(r'"([^"]+)"', line.split("|", 1)[1]):
                if (kept := _keep(example)) is not None:
                    yield kept


def bible_verses():
    """King James verses through the `bible` command of Debian's bible-kjv (archaic, so off by default)."""
    if shutil.which("bible") is None:
        return
    result = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
        verse = VERSE_REFERENCE.sub("", line)
        for sentence in _sentences(verse):
            if (kept := _keep(sentence)) is not None:
                yield kept


# a GCIDE entry's first line: `Arrogant \Ar"ro*gant\, a. [F. arrogant, ...`; its senses `2. ...` or `(a) ...`
_HEADWORD = re.compile(r"^\S[^\n]*\\[^\n]*\\")
_SENSE_NUMBER = re.compile(r"^(\d+\.|\([a-z]\))\s*")


def dictionary_sentences(path: Path = GCIDE_FILE):
    """The definitions and quotations of GCIDE (Webster's 1913 dictionary and WordNet's glosses, Debian's
    dict-gcide): 3 million words of general English prose for language models ("the act or habit of arrogating",
    "i hate not you for her proud arrogance"). Headword lines, etymologies and other bracketed notes, attributions
    (`--Shak.`), synonym lists and `{cross references}`' braces are dropped; definitions split at `;` too."""
    if not path.exists():
        return
    with gzip.open(path, "rt", encoding="utf-8", errors="ignore") as dictionary:
        text = dictionary.read()
    for block in re.split(r"\n\s*\n", text):
        lines = block.splitlines()[1:] if _HEADWORD.match(block) else block.splitlines()
        lines = [line.strip() for line in lines]
        paragraph = " ".join(line for line in lines if line and not line.startswith(("[", "Syn:", "Note:")))
        paragraph = re.sub(r"\[[^\]]*\]", " ", paragraph)  # [1913 Webster], [Obs.], etymologies
        paragraph = re.sub(r"--\s*[A-Z][\w.]*", " ", paragraph).replace("{", "").replace("}", "")  # --Milton.
        paragraph = _SENSE_NUMBER.sub("", paragraph.strip())
        if "\\" in paragraph:
            continue
        for sentence in _sentences(paragraph):
            for clause in sentence.split(";"):
                if (kept := _keep(re.sub(r"^\s*as,\s*", "", clause))) is not None:
                    yield kept


def docstring_sentences():
    """Prose from the docstrings of Python's standard library: the text source of last resort, always installed
    (technical English; used only where Debian's fortunes and WordNet cannot be installed)."""
    import importlib.util
    import sys

    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in ("antigravity", "this"):
            continue
        spec = importlib.util.find_spec(name)  # finds the file without importing the module
        path = (spec.origin if spec else None) or ""
        if not path.endswith(".py"):
            continue
        source = Path(path).read_text(encoding="utf-8", errors="ignore")
        for block in re.findall(r'"""(.*?)"""', source, re.S):
            for sentence in _sentences(block):
                if (kept := _keep(sentence)) is not None:
                    yield kept


def corpus_sentences(bible: bool = False) -> list[str]:
    """Every usable sentence of the installed sources, normalised, deduplicated, in a fixed order: Debian's
    fortunes and WordNet examples (and the KJV with `bible`), or, where those are not installed, the standard
    library's docstrings (with a warning)."""
    sources = [fortune_sentences(), wordnet_examples()] + ([bible_verses()] if bible else [])
    sentences = list(dict.fromkeys(s for source in sources for s in source))
    if not sentences:
        logger.warning("Debian's fortunes and wordnet-base are not installed (%s, %s): the corpus text comes from "
                       "Python's docstrings instead", FORTUNES_DIR, WORDNET_DIR)  # fmt: skip
        sentences = list(dict.fromkeys(docstring_sentences()))
    return sentences


def lm_sentences(bible: bool = False, dictionary: bool = True) -> list[str]:
    """The text of language models: [`corpus_sentences`] and, with `dictionary`, GCIDE's prose
    ([`dictionary_sentences`]; a warning where Debian's dict-gcide is not installed), deduplicated."""
    sentences = corpus_sentences(bible)
    if dictionary:
        if not GCIDE_FILE.exists():
            logger.warning("Debian's dict-gcide is not installed (%s): the LM text is without its 3 million words",
                           GCIDE_FILE)  # fmt: skip
        sentences = list(dict.fromkeys([*sentences, *dictionary_sentences()]))
    return sentences
