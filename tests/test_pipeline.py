"""The saved model as a user meets it: transformers' ASR pipeline, the Auto classes and remote code."""

import json
import subprocess
import sys

import numpy as np
import soundfile
import soxr
import torch
from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor, pipeline

from speechseq import SpeechSeqForConditionalGeneration, SpeechSeqProcessor

from conftest import TRANSCRIPTS


def test_pipeline_transcribes_arrays_dicts_at_any_rate_and_files(trained_dir, signals, tmp_path):
    asr = pipeline("automatic-speech-recognition", model=str(trained_dir))
    assert asr.type == "seq2seq"
    for signal, text in zip(signals, TRANSCRIPTS):
        assert asr(signal)["text"] == text
        assert asr(torch.from_numpy(signal))["text"] == text
        for rate in (8000, 22050, 44100, 48000):
            resampled = soxr.resample(signal, 16000, rate)
            assert asr({"raw": resampled, "sampling_rate": rate})["text"] == text
            assert asr({"array": resampled, "sampling_rate": rate})["text"] == text
        for fmt in ("flac", "wav"):
            path = tmp_path / f"clip.{fmt}"
            soundfile.write(path, soxr.resample(signal, 16000, 44100), 44100)
            assert asr(str(path))["text"] == text
            assert asr(path.read_bytes())["text"] == text
    assert [out["text"] for out in asr(signals, batch_size=2)] == TRANSCRIPTS


def test_pipeline_takes_generate_kwargs(trained_dir, signals):
    asr = pipeline("automatic-speech-recognition", model=str(trained_dir))
    assert asr(signals[0], generate_kwargs={"num_beams": 3})["text"] == TRANSCRIPTS[0]
    assert asr(signals[0], generate_kwargs={"max_new_tokens": 3})["text"] == TRANSCRIPTS[0][:3]


def test_auto_classes_load_the_saved_directory(trained_dir):
    assert isinstance(AutoModelForSpeechSeq2Seq.from_pretrained(trained_dir), SpeechSeqForConditionalGeneration)
    assert isinstance(AutoProcessor.from_pretrained(trained_dir), SpeechSeqProcessor)


REMOTE = """
import json, sys
sys.modules["speechseq"] = None  # importing speechseq now fails
try:
    import speechseq
except ImportError:
    pass
else:
    raise SystemExit("speechseq is still importable")
import numpy as np
from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor, pipeline
path, signal = sys.argv[1], np.load(sys.argv[2])
model = AutoModelForSpeechSeq2Seq.from_pretrained(path, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
batch = processor(audio=[signal], sampling_rate=16000, return_tensors="pt")
asr = pipeline("automatic-speech-recognition", model=path, trust_remote_code=True)
print(json.dumps({
    "model": type(model).__module__, "processor": type(processor).__module__,
    "features": batch["input_features"][0, :5, :5].tolist(),
    "ids": model.generate(**batch).tolist(),
    "pipeline": asr(signal)["text"],
}))
"""


def test_remote_code_loads_without_speechseq(trained_dir, signals, processor, tmp_path):
    np.save(tmp_path / "signal.npy", signals[1])
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE, str(trained_dir), str(tmp_path / "signal.npy")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["model"].startswith("transformers_modules") and out["processor"].startswith("transformers_modules")
    model = SpeechSeqForConditionalGeneration.from_pretrained(trained_dir)
    batch = processor(audio=[signals[1]], sampling_rate=16000, return_tensors="pt")
    np.testing.assert_allclose(out["features"], batch["input_features"][0, :5, :5].numpy(), atol=1e-6)
    assert out["ids"] == model.generate(**batch).tolist()
    assert processor.batch_decode(out["ids"], skip_special_tokens=True) == [TRANSCRIPTS[1]]
    assert out["pipeline"] == TRANSCRIPTS[1]


def test_pipeline_passes_ctc_decoding_through(trained_dir, signals):
    asr = pipeline("automatic-speech-recognition", model=str(trained_dir))
    assert [asr(s, generate_kwargs={"decoding": "ctc"})["text"] for s in signals] == TRANSCRIPTS
