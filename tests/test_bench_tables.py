"""The benchmark suite's plumbing: the equal-budget comparison trains speechseq with the demo's recipe, can keep the
other system's figures from an earlier run, and the README's table says where every figure comes from."""

import json
import shutil
import sys
from pathlib import Path

import pytest
from transformers import HfArgumentParser

from speechseq.training import DataArguments, ModelArguments, SpeechSeqTrainingArguments

BENCH = Path(__file__).parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import equal_budget  # noqa: E402
import run  # noqa: E402


def test_the_demo_recipe_flags_parse_into_its_model_augmentation_and_schedule(tmp_path):
    import demo

    flags = [*demo.from_scratch_flags({"dropout": 0.1}), *demo.recipe_flags(45.0)]
    parser = HfArgumentParser((ModelArguments, DataArguments, SpeechSeqTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(
        ["--corpus_dir", "corpus", "--output_dir", str(tmp_path), *flags])
    assert json.loads(model_args.config_overrides) == {**demo.MODEL, "dropout": 0.1}
    assert json.loads(data_args.augmentation) == demo.AUGMENTATION and model_args.spec_augment_freq_masks == 2
    assert training_args.max_train_minutes == 45.0 and training_args.schedule_by_time
    assert training_args.learning_rate == demo.LEARNING_RATE
    assert training_args.max_frames_per_batch == demo.FRAMES_PER_BATCH and training_args.sortagrad


def test_keeping_a_system_needs_the_earlier_results_and_says_which(tmp_path, monkeypatch):
    missing = tmp_path / "nothing.json"
    monkeypatch.setattr(sys, "argv", ["equal_budget.py", "--corpus_dir", "corpus", "--work_dir", str(tmp_path),
                                      "--systems", "speechseq", "--output", str(missing)])  # fmt: skip
    with pytest.raises(ValueError, match="nothing.json is not there"):
        equal_budget.main()


def test_the_table_names_the_run_each_kept_figure_comes_from(tmp_path):
    results = tmp_path / "full"
    shutil.copytree(BENCH / "results" / "full", results)
    budget = json.loads((results / "equal_budget.json").read_text())
    if "kept_runs" not in budget:  # a run of both systems: keep Speech2Text's as --systems speechseq would
        budget["kept_runs"] = {"speech2text": {"trained": budget.get("training_run", budget["run"]),
                                               "decoded": budget["run"]}}  # fmt: skip
        (results / "equal_budget.json").write_text(json.dumps(budget))
    table = run.summary(results)
    kept = budget["kept_runs"]["speech2text"]
    assert (f"speech2text's figures kept from the run of {kept['decoded']['date']} at `{kept['decoded']['commit']}`"
            in table)  # fmt: skip
    for name in ("feature_extraction", "training_throughput", "equal_budget", "decoding", "pretrained"):
        assert f"- {name} (" in table  # each command with its date and commit
    assert "| speech2text (45 min) | beam10 |" in table
