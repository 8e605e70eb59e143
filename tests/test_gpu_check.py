"""bench/gpu_check.py, the GPU check, in its --dry_run mode on the CPU (the check itself needs CUDA)."""

import json
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import gpu_check  # noqa: E402


def test_the_dry_run_trains_in_each_precision_and_compares_decodings(tmp_path):
    results = gpu_check.main(["--dry_run", "--steps", "3", "--batch_size", "2", "--output", str(tmp_path / "g.json")])
    assert json.loads((tmp_path / "g.json").read_text())["training"] == results["training"]
    assert [row["precision"] for row in results["training"]] == ["fp32", "fp16", "bf16"]
    assert all(row["finite"] and row["steps"] == 3 and row["last_loss"] < row["first_loss"] for row in results["training"])
    assert all(results["decoding"][name]["equal"] for name in gpu_check.DECODINGS)  # the CPU against itself


def test_steps_the_grad_scaler_skips_are_counted():
    tokenizer = gpu_check.train_tokenizer(gpu_check.WORDS, kind="char")
    processor = gpu_check.SpeechSeqProcessor(gpu_check.SpeechSeqFeatureExtractor(), tokenizer)
    config = gpu_check.SpeechSeqConfig.from_preset("tiny", **gpu_check.special_token_ids(tokenizer))
    batches = gpu_check.synthetic_batches(processor, 3, 2, seed=0)
    batches[1]["input_features"] = torch.full_like(batches[1]["input_features"], float("inf"))  # inf gradients
    _, figures = gpu_check.train(config, batches, torch.device("cpu"), "fp16", seed=0)
    assert figures["skipped_steps"] == 1 and not figures["finite"]


def test_without_a_gpu_it_says_so_and_checks_nothing(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO):
        assert gpu_check.main(["--output", str(tmp_path / "g.json")]) is None
    assert "No CUDA GPU here" in caplog.text and not (tmp_path / "g.json").exists()
