"""Checkpoint averaging: the mean of the chosen checkpoints' tensors, chosen by recency or dev loss, loadable."""

import json

import pytest
import torch
from transformers import pipeline

from speechseq import SpeechSeqForConditionalGeneration
from speechseq.checkpoint_averaging import average_checkpoints, choose_checkpoints, main

from conftest import tiny_model

EVAL_LOSSES = {2: 3.0, 4: 1.0, 6: 2.5, 8: 1.5}  # step -> eval_loss


@pytest.fixture
def run_dir(tmp_path, tokenizer, processor):
    """A run's output directory as the Trainer leaves it: four checkpoints of a Conformer with InterCTC and
    self-conditioning (different weights each), the processor in each, and the evaluations in trainer_state.json."""
    history = [{"step": step, "eval_loss": loss} for step, loss in EVAL_LOSSES.items()]
    for seed, step in enumerate(EVAL_LOSSES):
        path = tmp_path / f"checkpoint-{step}"
        model = tiny_model(tokenizer, seed=seed, encoder_block="conformer", conv_norm="batch_norm", interctc_layers=[1],
                           interctc_weight=0.3, self_conditioning=True)  # fmt: skip
        model.save_pretrained(path)
        processor.save_pretrained(path)
        log = [entry for entry in history if entry["step"] <= step]
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": log}))
    (tmp_path / "checkpoint-10").mkdir()  # a save the kill cut short: no trainer_state.json
    return tmp_path


def checkpoint(run_dir, step):
    return SpeechSeqForConditionalGeneration.from_pretrained(run_dir / f"checkpoint-{step}")


def test_last_and_best_choose_by_step_and_by_dev_loss(run_dir):
    assert [p.name for p in choose_checkpoints(run_dir, last=2)] == ["checkpoint-6", "checkpoint-8"]
    assert [p.name for p in choose_checkpoints(run_dir, best=2)] == ["checkpoint-4", "checkpoint-8"]
    assert [p.name for p in choose_checkpoints(run_dir, best=3)] == ["checkpoint-4", "checkpoint-6", "checkpoint-8"]
    for kwargs, message in [(dict(last=5), "4 complete checkpoints"), (dict(), "exactly one"),
                            (dict(last=1, best=1), "exactly one"), (dict(last=0), "at least 1")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            choose_checkpoints(run_dir, **kwargs)


def test_the_average_is_the_mean_of_every_tensor_and_keeps_ties(run_dir):
    steps = (4, 6, 8)
    averaged = average_checkpoints([run_dir / f"checkpoint-{s}" for s in steps])
    states = [checkpoint(run_dir, s).state_dict() for s in steps]
    checked = 0
    for name, tensor in averaged.state_dict().items():
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, sum(state[name] for state in states) / 3)
            checked += 1
        else:  # BatchNorm's step count: the last checkpoint's
            assert torch.equal(tensor, states[-1][name])
    assert checked > 50
    assert averaged.lm_head.weight.data_ptr() == averaged.model.decoder.embed_tokens.weight.data_ptr()
    assert averaged.model.encoder._ctc_head[0] is averaged.ctc_head
    assert not torch.allclose(averaged.ctc_head.weight, states[-1]["ctc_head.weight"])


def test_speechseq_average_writes_a_model_the_pipeline_loads(run_dir, signals):
    main(["--model_dir", str(run_dir), "--best", "2"])
    out = run_dir / "averaged"
    assert json.loads((out / "averaged_from.json").read_text()) == ["checkpoint-4", "checkpoint-8"]
    expected = average_checkpoints([run_dir / "checkpoint-4", run_dir / "checkpoint-8"])
    loaded = SpeechSeqForConditionalGeneration.from_pretrained(out)
    for name, tensor in expected.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)
    asr = pipeline("automatic-speech-recognition", model=str(out))
    assert isinstance(asr(signals[0])["text"], str)


def test_checkpoints_of_different_models_are_refused(run_dir, tokenizer):
    tiny_model(tokenizer, encoder_block="conformer", conv_norm="batch_norm", interctc_layers=[1], interctc_weight=0.3,
               self_conditioning=True, d_model=96).save_pretrained(run_dir / "checkpoint-8")  # fmt: skip
    with pytest.raises(ValueError, match="shape"):
        average_checkpoints([run_dir / "checkpoint-6", run_dir / "checkpoint-8"])
