"""Filterbank extraction throughput: speechseq's batched torch extractor vs transformers' Speech2Text extractor.

Both get the same 32 ten-second clips in the same run and compute 80-bin Kaldi-style log-mels with utterance
normalisation; Speech2Text takes its numpy path (torchaudio is not installed beside torch 2.13). The figure is
audio-seconds per CPU-second (process time, all threads counted), best of `--repeats` runs. Each extractor runs in a
Python process of its own: `peak_rss_mb` is that process's peak resident memory, `loaded_rss_mb` its peak with the
clips made and the extractor built, before extracting (the difference is the extraction's own memory).

    python bench/feature_extraction.py [--clips 32] [--seconds 10] [--repeats 3]
"""

import argparse
import logging
import time

import numpy as np
from transformers import Speech2TextFeatureExtractor

from speechseq import SpeechSeqFeatureExtractor

from common import in_fresh_process, peak_rss_mb, write_results

logger = logging.getLogger("bench.feature_extraction")


def clips(count: int, seconds: float, sampling_rate: int = 16000) -> list[np.ndarray]:
    """Speech-like test audio: harmonic tones with a moving pitch and syllable-rate envelope, over noise."""
    g = np.random.default_rng(0)
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    out = []
    for _ in range(count):
        pitch = g.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * g.uniform(0.2, 1) * t))
        phase = 2 * np.pi * np.cumsum(pitch) / sampling_rate
        voice = sum(np.sin(k * phase) / k for k in range(1, 20))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * g.uniform(3, 5) * t)
        out.append((0.05 * voice * envelope + 0.005 * g.standard_normal(len(t))).astype(np.float32))
    return out


def throughput(extract, audio: list[np.ndarray], repeats: int) -> float:
    seconds = sum(len(a) for a in audio) / 16000
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        extract(audio)
        best = min(best, time.process_time() - start)
    return seconds / best


def measure(name: str, count: int, seconds: float, repeats: int) -> dict:
    """Throughput and peak memory of one extractor, "speechseq" or "speech2text" (in a fresh process: see
    `in_fresh_process`)."""
    audio = clips(count, seconds)
    extractor = SpeechSeqFeatureExtractor() if name == "speechseq" else Speech2TextFeatureExtractor()
    loaded = peak_rss_mb()
    rate = throughput(lambda x: extractor(x, sampling_rate=16000), audio, repeats)
    return {"audio_s_per_cpu_s": rate, "loaded_rss_mb": loaded, "peak_rss_mb": peak_rss_mb()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", help="default: bench/results/feature_extraction.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    audio = clips(args.clips, args.seconds)
    ours = SpeechSeqFeatureExtractor()
    theirs = Speech2TextFeatureExtractor()
    a = ours(audio, sampling_rate=16000, return_tensors="np")
    b = theirs(audio, sampling_rate=16000, return_tensors="np", padding=True)
    # same features up to float32 vs float64 arithmetic (Speech2Text's CMVN has no variance floor, so compare there)
    difference = float(np.abs(a["input_features"] - b["input_features"]).max())

    result = {"benchmark": "feature_extraction", "clips": args.clips, "seconds_per_clip": args.seconds,
              "max_abs_feature_difference": difference}  # fmt: skip
    for name in ("speechseq", "speech2text"):
        for key, value in in_fresh_process(measure, name, args.clips, args.seconds, args.repeats).items():
            result[f"{name}_{key}"] = value
    result["speedup"] = result["speechseq_audio_s_per_cpu_s"] / result["speech2text_audio_s_per_cpu_s"]
    write_results("feature_extraction", result, args.output)
    logger.info(
        "speechseq %.0f audio-s/CPU-s (peak RSS %.0f MB), Speech2Text %.0f audio-s/CPU-s (%.0f MB): %.1fx (max feature "
        "difference %.2e)", result["speechseq_audio_s_per_cpu_s"], result["speechseq_peak_rss_mb"],
        result["speech2text_audio_s_per_cpu_s"], result["speech2text_peak_rss_mb"], result["speedup"], difference,
    )  # fmt: skip


if __name__ == "__main__":
    main()
