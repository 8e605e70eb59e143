"""`speechseq-transcribe`: audio files to text, JSON with word times, or subtitles (SRT, WebVTT).

    speechseq-transcribe demo/model talk.flac lecture.mp3 --format srt --output_dir subtitles/

Each file goes through `pipeline("automatic-speech-recognition")` with the model's own decoding settings (its
`generation_config`; `--generate_kwargs` overrides them): long files are cut at pauses and decoded whole, and the
times come from the CTC head's alignment. Subtitle cues hold at most `--cue_chars` characters and `--cue_seconds`
seconds of words.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

from tqdm.auto import tqdm

__all__ = ["cues", "to_srt", "to_vtt", "main"]

logger = logging.getLogger(__name__)
FORMATS = ("txt", "json", "srt", "vtt")


def cues(chunks: list[dict], max_chars: int = 42, max_seconds: float = 5.0) -> list[dict]:
    """Word chunks (`{"text", "timestamp": (start, end)}`) grouped into subtitle cues of at most `max_chars`
    characters and `max_seconds` seconds (a longer single word is a cue of its own)."""
    grouped = []
    for chunk in chunks:
        start, end = chunk["timestamp"]
        if grouped:
            last = grouped[-1]
            text = f"{last['text']} {chunk['text']}"
            if len(text) <= max_chars and end - last["timestamp"][0] <= max_seconds:
                grouped[-1] = {"text": text, "timestamp": (last["timestamp"][0], end)}
                continue
        grouped.append({"text": chunk["text"], "timestamp": (start, end)})
    return grouped


def _clock(seconds: float, separator: str) -> str:
    milliseconds = round(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{separator}{rest % 1000:03d}"


def to_srt(cue_list: list[dict]) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`."""
    return "".join(f"{i}\n{_clock(c['timestamp'][0], ',')} --> {_clock(c['timestamp'][1], ',')}\n{c['text']}\n\n"
                   for i, c in enumerate(cue_list, 1))  # fmt: skip


def to_vtt(cue_list: list[dict]) -> str:
    """WebVTT: the header, then cues `HH:MM:SS.mmm --> HH:MM:SS.mmm`."""
    return "WEBVTT\n\n" + "".join(f"{_clock(c['timestamp'][0], '.')} --> {_clock(c['timestamp'][1], '.')}\n{c['text']}\n\n"
                                  for c in cue_list)  # fmt: skip


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("files", nargs="+")
    parser.add_argument("--format", choices=FORMATS, default="txt")
    parser.add_argument("--timestamps", choices=("word", "char"), default=None,
                        help="word or character times in the JSON (subtitles always use words)")  # fmt: skip
    parser.add_argument("--output_dir", help="write <output_dir>/<file stem>.<format>; default: print to stdout")
    parser.add_argument("--generate_kwargs", default="{}", help="JSON of generate() options over the model's own")
    parser.add_argument("--cue_chars", type=int, default=42)
    parser.add_argument("--cue_seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        raise ValueError(f"no such audio file: {', '.join(missing)}")
    from transformers import pipeline

    import speechseq  # noqa: F401  (registers the model and the pipeline)

    asr = pipeline("automatic-speech-recognition", model=args.model_dir)
    level = "word" if args.format in ("srt", "vtt") else args.timestamps
    options = {"generate_kwargs": json.loads(args.generate_kwargs)}
    if level:
        options["return_timestamps"] = level
    results = []
    for path in tqdm(args.files, desc="transcribing", unit="file", disable=len(args.files) < 2):
        out = asr(path, **options)
        result = {"file": path, "text": out["text"], **({"chunks": out["chunks"]} if level else {})}
        results.append(result)
        if args.format == "txt":
            text = out["text"] + "\n"
        elif args.format == "json":
            text = json.dumps(result, indent=2) + "\n"
        else:
            cue_list = cues(out["chunks"], args.cue_chars, args.cue_seconds)
            text = to_srt(cue_list) if args.format == "srt" else to_vtt(cue_list)
        if args.output_dir:
            target = Path(args.output_dir) / f"{Path(path).stem}.{args.format}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
    return results


if __name__ == "__main__":
    main()
