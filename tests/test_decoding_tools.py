"""The language model trainer (examples/run_lm.py) and the fusion weight tuner (examples/tune_decoding.py)."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from transformers import pipeline

from speechseq import SpeechSeqForConditionalGeneration, SpeechSeqProcessor
from speechseq.ngram_lm import WordLanguageModel, is_binary

from conftest import TRANSCRIPTS, signals_dataset

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
import run_lm  # noqa: E402
import tune_decoding  # noqa: E402

WORDS = ["hello", "world", "good", "bye", "the", "quick", "brown", "fox", "lazy", "dog"]


def text_file(path, n=400):
    """Distinct three-word sentences over ten words: an LM learns their spelling quickly."""
    path.write_text("\n".join(f"{WORDS[i % 10]} {WORDS[i // 10 % 10]} {WORDS[i // 100 % 10]}" for i in range(n)))
    return path


def test_run_lm_trains_a_language_model_that_fuses(trained_dir, signals, tmp_path):
    corpus = text_file(tmp_path / "text.txt")
    out = tmp_path / "lm"
    results = run_lm.main([
        "--tokenizer_name_or_path", str(trained_dir), "--text_files", str(corpus), "--held_out_sentences", "20",
        "--preset", "tiny", "--output_dir", str(out), "--max_steps", "60", "--per_device_train_batch_size", "32",
        "--learning_rate", "3e-3", "--report_to", "none", "--save_strategy", "no", "--use_cpu",
    ])  # fmt: skip
    vocab = len(SpeechSeqProcessor.from_pretrained(trained_dir).tokenizer)
    # far better than guessing among the vocabulary: it learned the grammar's spelling
    assert results["perplexity_per_token"] < vocab / 4
    assert json.loads((out / "lm_results.json").read_text()) == results
    model = SpeechSeqForConditionalGeneration.from_pretrained(trained_dir).eval()
    processor = SpeechSeqProcessor.from_pretrained(trained_dir)
    batch = processor(audio=signals, sampling_rate=16000, return_tensors="pt")
    out_ids = model.generate(**batch, num_beams=3, lm=str(out), lm_weight=0.2, return_dict_in_generate=True)
    assert processor.batch_decode(out_ids.sequences, skip_special_tokens=True) == TRANSCRIPTS
    assert torch.all(out_ids.scorer_scores["lm"] < 0)


def test_held_out_text_never_reaches_training(tmp_path):
    args = run_lm.LMArguments(tokenizer_name_or_path="unused", text_files=[str(text_file(tmp_path / "t.txt"))],
                              held_out_sentences=15)  # fmt: skip
    train, held_out = run_lm.split_sentences(args, seed=0)
    assert len(held_out) == 15 and not set(train) & set(held_out)
    assert set(train) | set(held_out) == set((tmp_path / "t.txt").read_text().splitlines())


def test_tune_decoding_ranks_the_grid_and_saves_the_best(trained_dir, signals, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(trained_dir, model_dir)
    model = SpeechSeqForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = SpeechSeqProcessor.from_pretrained(model_dir)
    dataset = signals_dataset(signals)
    # a "bonus" of -100 per token makes short hypotheses win: cut transcripts
    results = tune_decoding.tune(model, processor, dataset, 2, [0.0, 0.4], [0.0], [0.0, -100.0])
    assert len(results) == 4
    assert [r["cer"] for r in results] == sorted(r["cer"] for r in results)
    assert results[0]["length_bonus"] == 0.0 and results[0]["cer"] == 0.0 and results[-1]["cer"] > 0.1
    tune_decoding.save_setting(model_dir, {**results[0], "ctc_weight": 0.4})
    saved = SpeechSeqForConditionalGeneration.from_pretrained(model_dir).generation_config
    assert (saved.num_beams, saved.ctc_weight, saved.length_bonus, saved.lm) == (2, 0.4, 0.0, None)


def test_tune_decoding_with_an_ngram_lm_saves_it_inside_the_model(trained_dir, signals, tmp_path):
    from speechseq.ngram_lm import train_ngram_lm

    model_dir = tmp_path / "model"
    shutil.copytree(trained_dir, model_dir)
    ngram_lm = train_ngram_lm(text_file(tmp_path / "text.txt").read_text().splitlines(), tmp_path / "lm" / "w.arpa")
    model = SpeechSeqForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = SpeechSeqProcessor.from_pretrained(model_dir)
    dataset = signals_dataset(signals)
    results = tune_decoding.tune(model, processor, dataset, 2, [0.3], [0.0], [0.0], ngram_lm=str(ngram_lm),
                                 ngram_weights=[0.0, 0.5], word_bonuses=[0.0, 1.0])  # fmt: skip
    assert sorted((r["ngram_weight"], r["word_bonus"]) for r in results) == [(0, 0), (0, 1), (0.5, 0), (0.5, 1)]
    assert [r["wer"] for r in results] == sorted(r["wer"] for r in results)  # ranked by WER with an n-gram LM
    tune_decoding.save_setting(model_dir, {**results[0], "ngram_weight": 0.5}, ngram_lm=str(ngram_lm))
    saved = SpeechSeqForConditionalGeneration.from_pretrained(model_dir).generation_config
    assert (saved.ngram_lm, saved.ngram_weight) == ("ngram_lm.bin", 0.5)
    # saved as KenLM's binary, its vocabulary beside it: the same words and scores as the ARPA file
    binary, arpa = WordLanguageModel(model_dir / "ngram_lm.bin"), WordLanguageModel(ngram_lm)
    assert is_binary(binary.path) and binary.words == arpa.words and binary.prefixes == arpa.prefixes
    sentence = "hello world good morning"
    assert binary.model.score(sentence) == pytest.approx(arpa.model.score(sentence))
    # and it travels with save_pretrained, vocabulary included; the pipeline decodes with it
    model = SpeechSeqForConditionalGeneration.from_pretrained(model_dir)
    model.save_pretrained(tmp_path / "copy")
    processor.save_pretrained(tmp_path / "copy")
    assert WordLanguageModel(tmp_path / "copy" / "ngram_lm.bin").words == arpa.words
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "copy"))
    assert [asr(signal)["text"] for signal in signals] == TRANSCRIPTS


def test_a_tuned_fusion_lm_travels_with_the_model_directory(trained_dir, signals, tmp_path):
    from speechseq import SpeechSeqForCausalLM, SpeechSeqLMConfig

    model_dir, lm_dir = tmp_path / "model", tmp_path / "lm"
    shutil.copytree(trained_dir, model_dir)
    model = SpeechSeqForConditionalGeneration.from_pretrained(model_dir).eval()
    c = model.config
    torch.manual_seed(0)
    SpeechSeqForCausalLM(SpeechSeqLMConfig.from_preset("tiny", vocab_size=c.vocab_size, pad_token_id=c.pad_token_id,
                                                       bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id,
                                                       decoder_start_token_id=c.decoder_start_token_id)
                         ).save_pretrained(lm_dir)  # fmt: skip
    setting = {"num_beams": 3, "ctc_weight": 0.3, "lm_weight": 0.5, "length_bonus": 0.0}
    tune_decoding.save_setting(model_dir, setting, lm=str(lm_dir))
    assert json.loads((model_dir / "generation_config.json").read_text())["lm"] == "fusion_lm"  # no absolute path
    batch = SpeechSeqProcessor.from_pretrained(model_dir)(audio=signals, sampling_rate=16000, return_tensors="pt")
    expected = model.generate(**batch, **setting, lm=str(lm_dir), return_dict_in_generate=True).sequences_scores
    shutil.rmtree(lm_dir)
    # copied elsewhere, and saved again from there: the LM goes along and decodes the same
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(model_dir, moved)
    shutil.rmtree(model_dir)
    loaded = SpeechSeqForConditionalGeneration.from_pretrained(moved).eval()
    loaded.save_pretrained(tmp_path / "saved")
    again = SpeechSeqForConditionalGeneration.from_pretrained(tmp_path / "saved").eval()
    for m in (loaded, again):
        out = m.generate(**batch, return_dict_in_generate=True)
        assert torch.allclose(out.sequences_scores, expected) and torch.all(out.scorer_scores["lm"] < 0)


def test_the_demo_script_loads_and_its_decodings_name_their_models():
    import demo  # its constants are read at import: a name used before it is defined fails here, not after training

    decodings = demo.decodings(Path("ngram/lm.arpa"))
    assert "beam 10 + CTC + LM" not in decodings  # the character LM only with --lm_steps
    assert demo.decodings(Path("ngram/lm.arpa"), Path("lm"))["beam 10 + CTC + LM"]["lm"] == "lm"
    assert decodings[demo.SAVED_DECODING]["ngram_lm"] == str(Path("ngram/lm.arpa"))
    assert decodings[demo.SAVED_DECODING]["num_beams"] == 30  # the n-gram's words need a wider beam
    assert decodings["beam 10 + CTC"]["ctc_weight"] == 0.6
    over_whisper = demo.decodings(Path("ngram/lm.arpa"), whisper=True)  # its decoder is the weaker: CTC leads
    saved, saved_over_whisper = decodings[demo.SAVED_DECODING], over_whisper[demo.SAVED_DECODING]
    assert (saved["ctc_weight"], saved["ngram_weight"]) == (0.6, 0.6)
    assert (saved_over_whisper["ctc_weight"], saved_over_whisper["ngram_weight"]) == (0.8, 1.1)
    assert saved_over_whisper["num_beams"] == 30 and over_whisper["beam 10 + CTC"] == decodings["beam 10 + CTC"]
    assert {demo._key(name) for name in decodings} >= {"beam30_ctc_ngram", "ctc_beam10_ngram", "greedy_ctc"}
    # test_seen gets greedy CTC alone (named in the results), test_unseen every decoding
    assert demo.split_decodings("test_seen", decodings) == ["greedy CTC"]
    assert demo.split_decodings("test_unseen", decodings) == list(decodings)


def test_the_demo_trains_all_of_a_whisper_encoder_at_its_own_rate_or_only_its_last_layers():
    import demo

    def value(flags, name):
        return flags[flags.index(name) + 1] if name in flags else None

    assert demo.WHISPER_TRAINABLE_LAYERS == 0  # frozen: what transfers to recorded speech (README, real recordings)
    every = demo.whisper_flags("tiny.en", None)
    assert value(every, "--pretrained_encoder") == "tiny.en" and value(every, "--trainable_encoder_layers") is None
    assert json.loads(value(every, "--learning_rates")) == demo.WHISPER_LEARNING_RATES
    frozen = demo.whisper_flags("tiny.en", 0)  # no learning rate for parameters that do not train
    assert value(frozen, "--trainable_encoder_layers") == "0" and value(frozen, "--learning_rates") is None
    assert value(demo.whisper_flags("tiny.en", 2), "--learning_rates") is not None
