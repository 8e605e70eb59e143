"""Waveform augmentation: what each transform does, seeded, training batches only."""

import json

import numpy as np
import pytest
import torch
from transformers import Seq2SeqTrainingArguments

from speechseq.data import SpeechSeqDataCollator
from speechseq.data.augmentation import (BANDS, SpeechAugmentation, add_noise, add_pauses, band_limit, fft_length,
                                         reverberate, speed_perturb)  # fmt: skip
from speechseq.training import SpeechSeqTrainer, main

from conftest import signals_dataset, tiny_model
from test_training import ARGS, data_args, manifest  # noqa: F401  (the manifest fixture)

EVERYTHING = SpeechAugmentation(speed_factors=(0.9, 1.0, 1.1), noise_probability=1.0, band_limit_probability=0.5,
                                reverb_probability=0.5, pause_probability=0.5)  # fmt: skip


def power_outside(x, low, high):
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    frequencies = np.fft.rfftfreq(len(x), 1 / 16000)
    return spectrum[(frequencies < low) | (frequencies > high)].sum() / spectrum.sum()


def test_each_transform_keeps_the_length_but_speed_and_does_what_it_says(signals):
    x, rng = signals[1], np.random.default_rng(0)
    assert len(speed_perturb(x, 1.1)) == pytest.approx(len(x) / 1.1, abs=2)
    assert len(speed_perturb(x, 0.9)) == pytest.approx(len(x) / 0.9, abs=2)
    telephone = band_limit(x, 300, 3400)
    assert len(telephone) == len(x) and power_outside(telephone, 300, 3400) < 1e-10 < power_outside(x, 300, 3400)
    for snr in (5.0, 20.0):
        noisy = add_noise(x, snr, rng)
        measured = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((noisy - x).astype(np.float64) ** 2))
        assert len(noisy) == len(x) and measured == pytest.approx(snr, abs=0.1)
    wet = reverberate(x, rng)
    assert len(wet) == len(x) and np.max(np.abs(wet)) == pytest.approx(np.max(np.abs(x)), rel=1e-4)
    assert np.corrcoef(wet, x)[0, 1] < 0.99  # smeared in time
    for _ in range(20):  # all of them at once, any draw: finite
        assert np.isfinite(EVERYTHING(x, rng)).all()
    assert np.array_equal(SpeechAugmentation()(x, rng), x)


def test_fft_transforms_at_lengths_with_large_prime_factors():
    """The FFTs run at a fast length (factors 2, 3, 5) and cut back: the same transforms as at the waveform's own
    length (16001 samples, a prime, where numpy's FFT is slowest)."""
    assert [fft_length(n) for n in (1, 7, 16000, 16001, 44311)] == [1, 8, 16000, 16200, 45000]
    x, rng = np.random.default_rng(1).standard_normal(16001).astype(np.float32), np.random.default_rng(0)
    for low, high in BANDS.values():
        limited, exact = band_limit(x, low, high), np.fft.rfft(x.astype(np.float64))
        exact[(np.fft.rfftfreq(len(x), 1 / 16000) < low) | (np.fft.rfftfreq(len(x), 1 / 16000) > high)] = 0
        exact = np.fft.irfft(exact, n=len(x))
        assert len(limited) == len(x) and power_outside(limited, low, high) < 1e-3
        assert np.sum((limited - exact) ** 2) < 1e-3 * np.sum(exact**2)
    wet, response_rng = reverberate(x, rng), np.random.default_rng(0)  # exact: a linear convolution, not circular
    rt60 = response_rng.uniform(0.2, 0.7)
    t = np.arange(int(rt60 * 16000)) / 16000
    response = response_rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    response[0] = 1.0 / 0.3
    direct = np.convolve(x.astype(np.float64), response)[: len(x)]
    np.testing.assert_allclose(wet, direct * np.max(np.abs(x)) / np.max(np.abs(direct)), atol=1e-4)
    for snr in (0.0, 5.0, 10.0, 20.0, 30.0, 40.0):  # pink, white, white, pink, ...: as long as x, at the asked level
        noisy = add_noise(x, snr, rng)
        measured = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((noisy - x).astype(np.float64) ** 2))
        assert len(noisy) == len(x) and measured == pytest.approx(snr, abs=0.1)


def test_pauses_of_quiet_room_tone_around_a_batch_of_utterances_left_as_they_were(signals):
    x, rng = signals[1], np.random.default_rng(0)
    padded = add_pauses(x, (0.25, 0.5), 30.0, rng)
    assert len(padded) == len(x) + 4000 + 8000
    assert np.array_equal(padded[4000 : 4000 + len(x)], x)
    tone = np.concatenate([padded[:4000], padded[-8000:]]).astype(np.float64)
    assert 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(tone**2)) == pytest.approx(30.0, abs=0.5)
    assert not np.any(add_pauses(np.zeros(100, np.float32), (0.1, 0.1), 30.0, rng))  # silence stays silence
    batches = [SpeechAugmentation(pause_probability=1.0).pause(signals[:2], rng) for _ in range(20)]
    extra = [[len(y) - len(x) for x, y in zip(signals, batch)] for batch in batches]
    assert all(a == b and 3200 <= a <= 32000 for a, b in extra)  # the same pauses for the whole batch ...
    assert len({a for a, _ in extra}) > 1  # ... drawn per batch
    # off, it draws nothing: a seed gives the batches it gave before pauses existed
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    assert all(y is x for x, y in zip(signals, SpeechAugmentation().pause(signals, a))) and a.random() == b.random()


def test_the_collator_augments_the_same_way_for_a_seed(processor, signals):
    rows = list(signals_dataset(signals))
    features = [SpeechSeqDataCollator(processor, augmentation=EVERYTHING, seed=seed)(rows)["input_features"]
                for seed in (0, 0, 1)]  # fmt: skip
    plain = SpeechSeqDataCollator(processor)(rows)["input_features"]
    assert torch.equal(features[0], features[1])
    assert not torch.equal(features[0], features[2])
    assert features[0].shape != plain.shape or not torch.allclose(features[0], plain)
    assert torch.isfinite(features[0]).all()


def test_only_the_training_batches_are_augmented(processor, tokenizer, signals, tmp_path):
    dataset = signals_dataset(signals[:1], ["hello world"])
    plain = SpeechSeqDataCollator(processor)
    trainer = SpeechSeqTrainer(
        model=tiny_model(tokenizer), args=Seq2SeqTrainingArguments(tmp_path, per_device_train_batch_size=1,
        per_device_eval_batch_size=1, use_cpu=True, report_to="none", remove_unused_columns=False),
        train_dataset=dataset, eval_dataset=dataset, data_collator=plain,
        train_data_collator=SpeechSeqDataCollator(processor, augmentation=SpeechAugmentation(noise_probability=1.0)),
    )  # fmt: skip
    expected = plain(list(dataset))["input_features"]
    assert torch.equal(next(iter(trainer.get_eval_dataloader()))["input_features"], expected)
    assert not torch.allclose(next(iter(trainer.get_train_dataloader()))["input_features"], expected)


def test_joining_makes_pairs_of_neighbours_with_a_pause_and_both_transcripts(signals):
    waveforms, texts = [signals[0], signals[1], signals[0][:8000]], ["one", "two", "three"]
    joiner = SpeechAugmentation(join_probability=1.0, join_pause_seconds=(0.25, 0.5))
    joined, joined_texts = joiner.join(waveforms, texts, np.random.default_rng(0))
    assert joined_texts == ["one two", "three"]  # the odd one out stays alone
    pause = len(joined[0]) - 32000
    assert 4000 <= pause <= 8000 and np.array_equal(joined[1], waveforms[2])
    assert np.array_equal(joined[0][:16000], signals[0]) and np.array_equal(joined[0][-16000:], signals[1])
    assert not joined[0][16000 : 16000 + pause].any()  # digital silence: the noise, if asked for, comes after
    rng, untouched = np.random.default_rng(0), np.random.default_rng(0)
    assert SpeechAugmentation(noise_probability=1.0).join(waveforms, texts, rng) == (waveforms, texts)
    assert rng.random() == untouched.random()  # off, it draws nothing: seeds give the batches they gave before
    half = SpeechAugmentation(join_probability=0.5)
    sizes = [len(half.join(waveforms * 2, texts * 2, np.random.default_rng(seed))[1]) for seed in range(40)]
    assert set(sizes) == {3, 6} and 10 < sizes.count(3) < 30  # a whole batch joined, or none of it


def test_the_collator_joins_labelled_pairs_and_tokenizes_both_transcripts(processor, tokenizer, signals):
    rows = list(signals_dataset(signals, ["hello world", "good morning"]))
    batch = SpeechSeqDataCollator(processor, augmentation=SpeechAugmentation(join_probability=1.0), seed=0)(rows)
    assert batch["input_features"].shape[0] == 1 and batch["attention_mask"].sum() >= 2 * 100 + 10
    assert tokenizer.decode(batch["labels"][0][batch["labels"][0] != -100], skip_special_tokens=True) == \
        "hello world good morning"
    unlabelled = SpeechSeqDataCollator(processor, augmentation=SpeechAugmentation(join_probability=1.0))(
        list(signals_dataset(signals, ["", ""])))  # fmt: skip
    assert unlabelled["input_features"].shape[0] == 2  # nothing to join the transcripts of: left as they are


def test_joined_batches_for_the_ctc_head_alone(processor, tokenizer, signals, tmp_path):
    rows = list(signals_dataset(signals, ["hello world", "good morning"]))
    joiner = SpeechAugmentation(join_probability=1.0, join_ctc_only=True)
    batch = SpeechSeqDataCollator(processor, augmentation=joiner, seed=0)(rows)
    assert batch["ctc_only"] is True and batch["input_features"].shape[0] == 1
    single = SpeechSeqDataCollator(processor, augmentation=joiner, seed=0)(rows[:1])  # nothing to join: both heads
    assert "ctc_only" not in single
    both_heads = SpeechSeqDataCollator(processor, augmentation=SpeechAugmentation(join_probability=1.0))(rows)
    assert "ctc_only" not in both_heads

    model = tiny_model(tokenizer, encoder_layers=3, decoder_layers=2, d_model=96, ctc_weight=0.4).train()
    trainer = SpeechSeqTrainer(model=model, args=Seq2SeqTrainingArguments(tmp_path, use_cpu=True, report_to="none"))
    inputs = {key: value for key, value in batch.items() if key != "ctc_only"}
    torch.manual_seed(0)  # the same dropout masks in both passes
    loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
    torch.testing.assert_close(loss, 0.4 * outputs["ctc_loss"])
    loss.backward()
    decoder_only = [p for name, p in model.named_parameters() if name.startswith("model.decoder.layers")]
    assert decoder_only and all(p.grad is not None and not p.grad.any() for p in decoder_only)  # zeros, not missing
    encoder_grads = {name: p.grad.clone() for name, p in model.named_parameters()
                     if name.startswith(("model.encoder.", "ctc_head."))}  # fmt: skip
    assert encoder_grads and all(g.any() for g in encoder_grads.values())
    model.zero_grad()
    torch.manual_seed(0)
    (0.4 * model(**inputs).ctc_loss).backward()
    for name, p in model.named_parameters():
        if name in encoder_grads:
            torch.testing.assert_close(p.grad, encoder_grads[name])  # the CTC head's gradients, untouched


@pytest.mark.parametrize(
    "options,message",
    [(dict(speed_factors=(0.3,)), "speed_factors"), (dict(noise_probability=1.5), "noise_probability"),
     (dict(noise_snr_db=(30, 10)), "noise_snr_db"), (dict(reverb_probability=-0.1), "reverb_probability"),
     (dict(join_probability=2.0), "join_probability"), (dict(join_pause_seconds=(-0.1, 0.5)), "join_pause_seconds"),
     (dict(join_pause_seconds=(1.0,)), "join_pause_seconds"), (dict(pause_probability=1.1), "pause_probability"),
     (dict(pause_seconds=(0.5, 0.1)), "pause_seconds"), (dict(pause_snr_db=(-5, 10)), "pause_snr_db")],
)  # fmt: skip
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        SpeechAugmentation(**options)


def test_training_with_augmentation(manifest, tmp_path):  # noqa: F811
    out = tmp_path / "augmented"
    augmentation = {"speed_factors": [0.9, 1.1], "noise_probability": 0.5, "band_limit_probability": 0.5,
                    "reverb_probability": 0.5}  # fmt: skip
    main([*data_args(manifest), *ARGS, "--output_dir", str(out), "--do_train", "--max_steps", "4", "--save_steps",
          "1000", "--logging_steps", "2", "--augmentation", json.dumps(augmentation)])  # fmt: skip
    losses = [e["loss"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_training_with_joins_for_the_ctc_head_alone(manifest, tmp_path):  # noqa: F811
    out = tmp_path / "joined"
    augmentation = json.dumps({"join_probability": 1.0, "join_ctc_only": True})
    main([*data_args(manifest), *ARGS, "--output_dir", str(out), "--do_train", "--max_steps", "4", "--save_steps",
          "1000", "--logging_steps", "2", "--augmentation", augmentation])  # fmt: skip
    logs = [e for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    # every batch joined, so every loss is the CTC head's share alone (tiny's ctc_weight 0.3)
    assert len(logs) == 2 and all(abs(e["loss"] - 0.3 * e["ctc_loss"]) < 0.02 * e["loss"] for e in logs)
    with pytest.raises(ValueError, match="join_ctc_only trains joined batches through the CTC head alone"):
        main([*data_args(manifest), *ARGS, "--output_dir", str(tmp_path / "no_ctc"), "--do_train", "--max_steps", "1",
              "--augmentation", augmentation, "--config_overrides", '{"ctc_weight": 0}'])  # fmt: skip
