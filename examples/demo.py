"""The whole speechseq stack in about a minute on a CPU: speech, features, training, saving, the ASR pipeline.

espeak-ng speaks twelve sentences in five voices. A tiny speechseq model learns them from four voices and is then
asked, through `pipeline("automatic-speech-recognition")`, to transcribe files of a seen voice and of the fifth voice,
which it never heard. With twelve sentences it can only memorise them: this shows that every part works together,
not a general recogniser (the corpus builder and training script of the next milestone make that).

    python examples/demo.py --output_dir demo
"""

import argparse
import json
import logging
import shutil
import subprocess
import time
from pathlib import Path

import jiwer
import torch
from transformers import pipeline, set_seed

from speechseq import (
    SpeechSeqConfig,
    SpeechSeqFeatureExtractor,
    SpeechSeqForConditionalGeneration,
    SpeechSeqProcessor,
    load_audio,
    special_token_ids,
    train_tokenizer,
)

logger = logging.getLogger("demo")

SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
]  # Harvard sentences, list 1
TRAIN_VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb-x-rp+m3"]
UNSEEN_VOICE = "en-029+f2"


def speak(text: str, voice: str, path: Path) -> Path:
    if not path.exists():
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(path), text], check=True)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="demo")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is missing: `apt-get install espeak-ng` (make demo does it)")
    set_seed(0)
    out = Path(args.output_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)

    def files(voice):
        return [speak(s, voice, out / "audio" / f"{voice.replace('+', '_')}-{i:02d}.wav") for i, s in enumerate(SENTENCES)]

    train = [(load_audio(f), s) for voice in TRAIN_VOICES for f, s in zip(files(voice), SENTENCES)]
    tokenizer = train_tokenizer(SENTENCES, kind="char")
    processor = SpeechSeqProcessor(SpeechSeqFeatureExtractor(), tokenizer)
    config = SpeechSeqConfig.from_preset("tiny", **special_token_ids(tokenizer), d_model=128, encoder_ffn_dim=512,
                                         decoder_ffn_dim=512, dropout=0.1)  # fmt: skip
    model = SpeechSeqForConditionalGeneration(config)
    logger.info("training a %.1fM-parameter model on %d utterances (%d voices) for %d steps",
                model.num_parameters() / 1e6, len(train), len(TRAIN_VOICES), args.steps)  # fmt: skip

    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=args.steps, pct_start=0.15)
    start = time.time()
    model.train()
    for step in range(args.steps):
        batch = [train[i] for i in torch.randperm(len(train))[:16].tolist()]
        inputs = processor(audio=[a for a, _ in batch], sampling_rate=16000, text=[t for _, t in batch],
                           return_tensors="pt")  # fmt: skip
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == args.steps - 1:
            logger.info("step %4d  loss %.3f  (%.0f s)", step, loss.item(), time.time() - start)
    model.eval()
    model.save_pretrained(out / "model")
    processor.save_pretrained(out / "model")

    asr = pipeline("automatic-speech-recognition", model=str(out / "model"))
    results, rows = {}, []
    for name, voice in (("seen_voice", TRAIN_VOICES[0]), ("unseen_voice", UNSEEN_VOICE)):
        paths = files(voice)
        hypotheses = [asr(str(p))["text"] for p in paths]
        references = [processor.normalize(s) for s in SENTENCES]
        results[f"cer_{name}"] = jiwer.cer(references, hypotheses)
        results[f"wer_{name}"] = jiwer.wer(references, hypotheses)
        rows += [(voice, p.name, r, h) for p, r, h in list(zip(paths, references, hypotheses))[:3]]

    print("\n| voice | file | reference | pipeline transcript |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nCER seen voice {results['cer_seen_voice']:.1%}, unseen voice {results['cer_unseen_voice']:.1%} "
          f"(WER {results['wer_seen_voice']:.1%} / {results['wer_unseen_voice']:.1%}); model in {out / 'model'}")
    print("The model memorised twelve sentences: a check of the whole stack, not a general recogniser.")
    (out / "results.json").write_text(json.dumps({**results, "train_seconds": time.time() - start}, indent=2))


if __name__ == "__main__":
    main()
