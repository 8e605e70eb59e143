import numpy as np
import pytest
import torch
from transformers import GenerationMixin

from speechseq import (
    SpeechSeqConfig,
    SpeechSeqForCausalLM,
    SpeechSeqForConditionalGeneration,
    SpeechSeqLMConfig,
    special_token_ids,
    train_tokenizer,
)
from speechseq.modeling_speechseq import ConformerLayer, rotary_angles, rotate, shift_tokens_right

from conftest import tiny_model


def batch(vocab_size, lengths=(120, 77), label_lengths=(9, 5), seed=0):
    """Random features with a frame mask, and labels ending in [EOS]=4, padded with -100."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), max(lengths), 80, generator=g)
    mask = (torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]).long()
    features = features * mask[..., None]
    labels = torch.full((len(lengths), max(label_lengths)), -100)
    for i, n in enumerate(label_lengths):
        labels[i, : n - 1] = torch.randint(6, vocab_size, (n - 1,), generator=g)
        labels[i, n - 1] = 4
    return features, mask, labels


def test_forward_shapes_and_finite_loss(tokenizer):
    model = tiny_model(tokenizer)
    features, mask, labels = batch(len(tokenizer))
    out = model(features, attention_mask=mask, labels=labels)
    V = len(tokenizer)
    assert out.logits.shape == (2, 9, V)
    assert out.ctc_logits.shape == (2, 29, V)  # ((120 - 1) // 2 - 1) // 2 frames
    assert out.encoder_output_lengths.tolist() == [29, 18]
    for loss in (out.loss, out.attention_loss, out.ctc_loss):
        assert torch.isfinite(loss)
    w = model.config.ctc_weight
    torch.testing.assert_close(out.loss, (1 - w) * out.attention_loss + w * out.ctc_loss)


def test_ctc_weight_zero_is_plain_cross_entropy(tokenizer):
    model = tiny_model(tokenizer, ctc_weight=0.0, label_smoothing=0.0)
    features, mask, labels = batch(len(tokenizer))
    out = model(features, attention_mask=mask, labels=labels)
    assert out.ctc_loss is None
    expected = torch.nn.functional.cross_entropy(out.logits.reshape(-1, len(tokenizer)), labels.reshape(-1))
    torch.testing.assert_close(out.loss, expected)


def test_ctc_targets_leave_out_eos(tokenizer):
    model = tiny_model(tokenizer)
    features, mask, labels = batch(len(tokenizer))
    without_eos = labels.masked_fill(labels == 4, -100)
    a = model(features, attention_mask=mask, labels=labels).ctc_loss
    b = model(features, attention_mask=mask, labels=without_eos).ctc_loss
    torch.testing.assert_close(a, b)


def test_loss_falls_on_a_fixed_batch(tokenizer):
    model = tiny_model(tokenizer).train()
    features, mask, labels = batch(len(tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = model(features, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


@pytest.mark.parametrize("subsampling", ["conv2d", "conv1d"])
@pytest.mark.parametrize("factor", [2, 4, 6, 8])
def test_output_lengths_are_exact_for_every_input_length(tokenizer, factor, subsampling):
    model = tiny_model(tokenizer, subsampling=subsampling, subsampling_factor=factor, encoder_layers=1)
    minimum = model.config.min_input_frames
    with torch.no_grad():
        for frames in range(minimum, 401):
            encoded = model.model.encoder(torch.randn(1, frames, 80)).last_hidden_state
            assert model._get_feat_extract_output_lengths(torch.tensor([frames])).item() == encoded.shape[1]
    for frames in range(1, minimum):
        with pytest.raises(ValueError, match="too short"):
            model._get_feat_extract_output_lengths(torch.tensor([frames]))
        with pytest.raises(ValueError, match="too short"):
            model(torch.randn(1, frames, 80), decoder_input_ids=torch.tensor([[3]]))


def test_input_longer_than_max_source_positions_raises(tokenizer):
    model = tiny_model(tokenizer, max_source_positions=10)
    with pytest.raises(ValueError, match="max_source_positions"):
        model(torch.randn(1, 100, 80), decoder_input_ids=torch.tensor([[3]]))


@torch.no_grad()
def assert_padding_changes_nothing(model, features, mask, labels):
    """The padded batch of `batch()` gives each utterance what it gives alone; returns the batch's output."""
    batched = model(features, attention_mask=mask, labels=labels)
    for i, (frames, tokens) in enumerate([(120, 9), (77, 5)]):
        alone = model(features[i : i + 1, :frames], labels=labels[i : i + 1, :tokens])
        n = alone.encoder_last_hidden_state.shape[1]
        assert batched.encoder_output_lengths[i] == n
        torch.testing.assert_close(batched.encoder_last_hidden_state[i, :n], alone.encoder_last_hidden_state[0])
        torch.testing.assert_close(batched.logits[i, :tokens], alone.logits[0])
        torch.testing.assert_close(batched.ctc_logits[i, :n], alone.ctc_logits[0])
    return batched


@pytest.mark.parametrize("subsampling, lstm", [("conv2d", False), ("conv2d", True), ("conv1d", False)])
def test_padding_in_a_batch_changes_nothing(tokenizer, subsampling, lstm):
    model = tiny_model(tokenizer, subsampling=subsampling, subsampling_lstm=lstm)
    assert_padding_changes_nothing(model, *batch(len(tokenizer)))


@pytest.mark.parametrize("position_embedding", ["sinusoidal", "rotary"])
def test_cached_decoding_equals_uncached(tokenizer, position_embedding):
    model = tiny_model(tokenizer, position_embedding=position_embedding)
    features, mask, labels = batch(len(tokenizer))
    decoder_input_ids = shift_tokens_right(labels, 0, 3)
    with torch.no_grad():
        full = model(features, attention_mask=mask, decoder_input_ids=decoder_input_ids, use_cache=False).logits
        encoder_outputs = model.model.encoder(features, mask)
        cache, steps = None, []
        for t in range(decoder_input_ids.shape[1]):
            out = model(
                encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=decoder_input_ids[:, t : t + 1],
                past_key_values=cache, use_cache=True,
            )  # fmt: skip
            cache = out.past_key_values
            steps.append(out.logits)
    assert cache.get_seq_length() == decoder_input_ids.shape[1]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


@pytest.mark.parametrize("saved_beams", [None, 10])
def test_greedy_generate_equals_an_argmax_loop(tokenizer, saved_beams):
    model = tiny_model(tokenizer, seed=3)
    features, mask, _ = batch(len(tokenizer))
    rows = []  # the decoder's batch at each step: one hypothesis per utterance, whatever the config saved
    model.model.decoder.register_forward_hook(lambda module, args, output: rows.append(output[0].shape[0]))
    if saved_beams:  # a model tuned for beam search (tune_decoding.py saves num_beams) asked for greedy
        model.generation_config.num_beams = saved_beams
        generated = model.generate(features, attention_mask=mask, max_new_tokens=12, num_beams=1)
    else:
        generated = model.generate(features, attention_mask=mask, max_new_tokens=12)
    assert set(rows) == {2}
    with torch.no_grad():
        for i in range(2):
            frames = int(mask[i].sum())
            tokens = [3]
            while len(tokens) <= 12 and tokens[-1] != 4:
                logits = model(features[i : i + 1, :frames], decoder_input_ids=torch.tensor([tokens])).logits
                tokens.append(int(logits[0, -1].argmax()))
            expected = tokens + [0] * (generated.shape[1] - len(tokens))  # finished rows are padded
            assert generated[i].tolist() == expected
    as_inputs = model.generate(inputs=features, attention_mask=mask, max_new_tokens=12)  # transformers' own keyword
    assert torch.equal(as_inputs, generated)


def test_hf_beam_search_scores_match_a_rescoring(tokenizer):
    model = tiny_model(tokenizer, seed=1)
    features, mask, _ = batch(len(tokenizer))
    out = model.generate(
        features, attention_mask=mask, num_beams=4, num_return_sequences=2, max_new_tokens=8, length_penalty=0.0,
        return_dict_in_generate=True,
    )  # fmt: skip
    assert out.sequences.shape[0] == 4
    with torch.no_grad():
        for row, sequence in enumerate(out.sequences):
            i = row // 2
            tokens = sequence.tolist()
            end = tokens.index(4) + 1 if 4 in tokens else len(tokens)
            tokens = torch.tensor([tokens[:end]])
            logits = model(features[i : i + 1, : int(mask[i].sum())], decoder_input_ids=tokens[:, :-1]).logits
            score = logits.log_softmax(-1)[0].gather(-1, tokens[0, 1:, None]).sum()
            torch.testing.assert_close(out.sequences_scores[row], score, atol=1e-4, rtol=1e-4)


def test_attention_weights_path_matches_sdpa(tokenizer):
    model = tiny_model(tokenizer)
    features, mask, labels = batch(len(tokenizer))
    with torch.no_grad():
        plain = model(features, attention_mask=mask, labels=labels)
        explicit = model(features, attention_mask=mask, labels=labels, output_attentions=True)
    torch.testing.assert_close(plain.logits, explicit.logits)
    n = int(explicit.encoder_output_lengths[1])
    for weights in explicit.encoder_attentions + explicit.cross_attentions:
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
        assert weights[1, ..., n:].abs().max() == 0  # padded frames get no attention
    for weights in explicit.decoder_attentions:
        assert torch.triu(weights, diagonal=1).abs().max() == 0  # nothing from the future


def test_save_load_round_trip(tokenizer, tmp_path):
    model = tiny_model(tokenizer)
    model.save_pretrained(tmp_path)
    loaded, info = SpeechSeqForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert loaded.lm_head.weight.data_ptr() == loaded.model.decoder.embed_tokens.weight.data_ptr()
    features, mask, labels = batch(len(tokenizer))
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.eval()(features, attention_mask=mask, labels=labels).logits,
            model(features, attention_mask=mask, labels=labels).logits,
        )


def test_gradient_checkpointing_gives_the_same_gradients(tokenizer):
    features, mask, labels = batch(len(tokenizer))
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(tokenizer).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert all(layer.gradient_checkpointing for layer in model.model.encoder.layers + model.model.decoder.layers)
        model(features, attention_mask=mask, labels=labels).loss.backward()
        grads.append(model.model.encoder.layers[0].self_attn.q_proj.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_ctc_greedy_decoding_merges_repeats_and_drops_blanks(tokenizer):
    model = tiny_model(tokenizer, seed=2)
    features, mask, _ = batch(len(tokenizer))
    generated = model.generate(features, attention_mask=mask, decoding="ctc")
    with torch.no_grad():
        out = model(features, attention_mask=mask, decoder_input_ids=torch.full((2, 1), 3))
    logits = out.ctc_logits.index_fill(-1, torch.tensor([0, 3, 4]), -torch.inf)  # never [PAD], [SOS], [EOS]
    for i in range(2):
        path = logits[i, : out.encoder_output_lengths[i]].argmax(-1).tolist()
        expected = [t for j, t in enumerate(path) if t != 5 and (j == 0 or t != path[j - 1])]
        row = generated[i].tolist()
        assert row[0] == 3 and row[len(expected) + 1] == 4
        assert row[1 : len(expected) + 1] == expected
        assert all(t == 0 for t in row[len(expected) + 2 :])
    model.generation_config.decoding = "ctc"
    assert torch.equal(model.generate(features, attention_mask=mask), generated)
    with pytest.raises(ValueError, match="decoding must be"):
        model.generate(features, decoding="rnnt")


# --- The "Echo" options: rotary positions and soft masking ---


def test_rotary_scores_depend_only_on_the_offset():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)

    def score(i, j):
        rq, rk = (rotate(x, rotary_angles(torch.tensor([p]), 16)) for x, p in ((q, i), (k, j)))
        return (rq * rk).sum()

    torch.testing.assert_close(score(3, 1), score(40, 38))  # same offset, same score
    assert not torch.isclose(score(3, 1), score(3, 2))
    torch.testing.assert_close(rotate(q, rotary_angles(torch.tensor([7]), 16)).norm(), q.norm())  # a rotation


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_soft_masking_lets_the_decoder_see_future_tokens(tokenizer, mode):
    """Change the last decoder input and watch the first position's output: hard masking hides the future from it;
    soft masking (logits times 1e-6 instead of -inf) leaves every masked token a weight near exp(0), so the first
    position sees what comes after it (and would learn to copy it in training)."""
    model = tiny_model(tokenizer, attention_mask_mode=mode)
    features, mask, labels = batch(len(tokenizer))
    inputs = shift_tokens_right(labels, 0, 3)[:1]
    changed = inputs.clone()
    changed[0, -1] = 7 if inputs[0, -1] != 7 else 8
    with torch.no_grad():
        before = model(features[:1], decoder_input_ids=inputs).logits[0, 0]
        after = model(features[:1], decoder_input_ids=changed).logits[0, 0]
    if mode == "hard":
        torch.testing.assert_close(before, after)
    else:
        assert (before - after).abs().max() > 1e-4


ECHO_OPTIONS = [
    {"position_embedding": "rotary"},
    {"attention_mask_mode": "soft"},
    {"input_mode": "waveform"},
    {"input_mode": "fusion"},
]


@pytest.mark.parametrize("options", ECHO_OPTIONS, ids=lambda o: "-".join(map(str, o.values())))
def test_echo_options_train_save_reload_generate_and_serve(tokenizer, tmp_path, options):
    from transformers import pipeline

    from speechseq import SpeechSeqFeatureExtractor, SpeechSeqProcessor

    model = tiny_model(tokenizer, **options).train()
    processor = SpeechSeqProcessor(SpeechSeqFeatureExtractor(input_mode=model.config.input_mode), tokenizer)
    audio = [np.random.default_rng(i).standard_normal(n).astype(np.float32) * 0.1 for i, n in enumerate((19200, 12800))]
    inputs = processor(audio=audio, sampling_rate=16000, text=["hello world", "good bye"], return_tensors="pt")
    assert inputs["input_features"].shape[-1] == model.config.input_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval().save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = SpeechSeqForConditionalGeneration.from_pretrained(tmp_path).eval()
    for key, value in options.items():
        assert getattr(loaded.config, key) == value
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)
    features, mask = inputs["input_features"], inputs["attention_mask"]
    greedy = loaded.generate(features, attention_mask=mask, max_new_tokens=6)
    fused = loaded.generate(features, attention_mask=mask, num_beams=3, ctc_weight=0.3, max_new_tokens=6)
    assert greedy.shape[0] == fused.shape[0] == 2 and (greedy[:, 0] == 3).all() and (fused[:, 0] == 3).all()
    # the pipeline feeds the model what its own extractor makes: its transcript is generate()'s
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path))
    expected = processor.batch_decode(loaded.generate(features[:1, : int(mask[0].sum())]), skip_special_tokens=True)
    assert asr(audio[0], generate_kwargs={"num_beams": 1})["text"] == expected[0]  # the pipeline's default is 5


def test_fusion_blends_both_front_ends_by_a_learned_weight(tokenizer):
    model = tiny_model(tokenizer, input_mode="fusion")
    encoder = model.model.encoder
    features = torch.randn(1, 60, model.config.input_size)
    lengths = model._get_feat_extract_output_lengths(torch.tensor([60]))
    with torch.no_grad():
        fbank = encoder.subsampling(features[..., :80], lengths)
        waveform = encoder.waveform_subsampling(features[..., 80:], lengths)
        torch.testing.assert_close(encoder._front_end(features, torch.tensor([60]), lengths), 0.5 * fbank + 0.5 * waveform)
        encoder.fusion_logit.fill_(20.0)  # all filterbank
        torch.testing.assert_close(encoder._front_end(features, torch.tensor([60]), lengths), fbank, atol=1e-6, rtol=1e-5)
    model.train()(features, decoder_input_ids=torch.tensor([[3, 7]])).logits.sum().backward()
    assert encoder.fusion_logit.grad is not None
    with pytest.raises(ValueError, match="input_mode 'fusion'"):
        model(torch.randn(1, 60, 80), decoder_input_ids=torch.tensor([[3]]))


def test_active_layers_run_as_a_shallower_model(tokenizer):
    deep = tiny_model(tokenizer, active_encoder_layers=1, active_decoder_layers=1)
    shallow = tiny_model(tokenizer, encoder_layers=1, decoder_layers=1)
    missing, unexpected = shallow.load_state_dict(deep.state_dict(), strict=False)
    assert not missing and all(".layers.1." in name for name in unexpected)
    features, mask, labels = batch(len(tokenizer))
    with torch.no_grad():
        torch.testing.assert_close(deep(features, attention_mask=mask, labels=labels).logits,
                                   shallow(features, attention_mask=mask, labels=labels).logits)  # fmt: skip
    with pytest.raises(ValueError, match="active_encoder_layers"):
        tiny_model(tokenizer, active_encoder_layers=3)


# --- A decoder started from a language model ---


def tiny_lm(tokenizer, seed=1, **overrides):
    torch.manual_seed(seed)
    ids = {k: v for k, v in special_token_ids(tokenizer).items() if k in ("vocab_size", "pad_token_id", "bos_token_id",
                                                                          "eos_token_id")}  # fmt: skip
    return SpeechSeqForCausalLM(SpeechSeqLMConfig.from_preset("tiny", **ids, **overrides))


def test_decoder_from_a_language_model_copies_its_weights_exactly(tokenizer, tmp_path):
    lm = tiny_lm(tokenizer)
    lm.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    config = tiny_model(tokenizer).config
    for source, given_tokenizer in ((lm, None), (tmp_path, tokenizer)):
        model = SpeechSeqForConditionalGeneration.from_pretrained_decoder(
            source, config, freeze_decoder=False, tokenizer=given_tokenizer
        )
        decoder = model.model.decoder.state_dict()
        for name, weight in lm.model.state_dict().items():
            assert torch.equal(decoder[name], weight), name
        assert torch.equal(model.lm_head.weight, lm.lm_head.weight)


def test_a_frozen_decoder_gets_no_gradients_but_cross_attention_does(tokenizer):
    model = SpeechSeqForConditionalGeneration.from_pretrained_decoder(tiny_lm(tokenizer), tiny_model(tokenizer).config)
    features, mask, labels = batch(len(tokenizer))
    model.train()(features, attention_mask=mask, labels=labels).loss.backward()
    layer = model.model.decoder.layers[0]
    assert layer.self_attn.q_proj.weight.grad is None and layer.mlp.fc1.weight.grad is None
    assert model.model.decoder.embed_tokens.weight.grad is None and model.lm_head.weight.grad is None
    assert layer.encoder_attn.q_proj.weight.grad.abs().sum() > 0
    assert model.model.encoder.layers[0].mlp.fc1.weight.grad.abs().sum() > 0
    model.freeze_decoder(False)
    assert all(p.requires_grad for p in model.parameters())


def test_a_mismatched_language_model_raises_listing_every_difference(tokenizer, tmp_path):
    config = tiny_model(tokenizer).config
    lm = tiny_lm(tokenizer, d_model=32, decoder_layers=3)
    with pytest.raises(ValueError, match=r"d_model 32 != 64.*decoder_layers 3 != 2"):
        SpeechSeqForConditionalGeneration.from_pretrained_decoder(lm, config)
    with pytest.raises(ValueError, match="position_embedding 'rotary' != 'sinusoidal'"):
        SpeechSeqForConditionalGeneration.from_pretrained_decoder(tiny_lm(tokenizer, position_embedding="rotary"),
                                                                  config)  # fmt: skip
    with pytest.raises(ValueError, match="attention_mask_mode 'soft' != 'hard'"):
        SpeechSeqForConditionalGeneration.from_pretrained_decoder(tiny_lm(tokenizer, attention_mask_mode="soft"),
                                                                  config)  # fmt: skip
    other = train_tokenizer(["hello world", "good bye"], kind="char")  # fewer letters: other ids
    tiny_lm(tokenizer).save_pretrained(tmp_path)
    other.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="tokenizers differ"):
        SpeechSeqForConditionalGeneration.from_pretrained_decoder(tmp_path, config, tokenizer=tokenizer)


# --- Conformer blocks and intermediate CTC -------------------------------------------------------------------------

# A shape no preset has: d_model 96, 3 encoder and 2 decoder layers, kernel 7.
CONFORMER = dict(encoder_block="conformer", d_model=96, encoder_layers=3, decoder_layers=2, encoder_ffn_dim=192,
                 decoder_ffn_dim=160, conv_kernel_size=7)  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [dict(conv_norm="layer_norm", position_embedding="rotary"),
     dict(conv_norm="batch_norm", position_embedding="sinusoidal"),
     dict(conv_norm="layer_norm", interctc_layers=[1, 2], interctc_weight=0.5, self_conditioning=True)],
    ids=["layer_norm-rotary", "batch_norm-sinusoidal", "interctc-self_conditioning"],
)  # fmt: skip
def test_conformer_padding_in_a_batch_changes_nothing(tokenizer, options):
    model = tiny_model(tokenizer, **CONFORMER, **options)
    with torch.no_grad():  # random running statistics, so that BatchNorm is not the identity
        for layer in model.model.encoder.layers:
            if options["conv_norm"] == "batch_norm":
                layer.conv.norm.running_mean.uniform_(-0.5, 0.5)
                layer.conv.norm.running_var.uniform_(0.5, 2.0)
    assert_padding_changes_nothing(model, *batch(len(tokenizer)))


def test_conformer_output_lengths_are_exact(tokenizer):
    model = tiny_model(tokenizer, **CONFORMER)
    with torch.no_grad():
        for frames in range(model.config.min_input_frames, 160, 7):
            encoded = model.model.encoder(torch.randn(1, frames, 80)).last_hidden_state
            assert model._get_feat_extract_output_lengths(torch.tensor([frames])).item() == encoded.shape[1]


def test_intermediate_ctc_losses_are_the_shared_head_on_the_intermediate_layers(tokenizer):
    model = tiny_model(tokenizer, **CONFORMER, interctc_layers=[1, 2], interctc_weight=0.4, ctc_weight=0.3)
    features, mask, labels = batch(len(tokenizer))
    with torch.no_grad():
        out = model(features, attention_mask=mask, labels=labels, output_hidden_states=True)
        encoder = model.model.encoder
        lengths = out.encoder_output_lengths
        # hidden_states[k] is the input of layer k (0-based): the output of layer k in 1-based counting
        intermediate = [model._ctc_loss(model.ctc_head(encoder.layer_norm(out.encoder_hidden_states[k])), lengths, labels)
                        for k in (1, 2)]  # fmt: skip
    torch.testing.assert_close(out.interctc_loss, torch.stack(intermediate).mean())
    assert not torch.allclose(intermediate[0], intermediate[1])
    ctc = 0.6 * out.ctc_loss + 0.4 * out.interctc_loss
    torch.testing.assert_close(out.loss, 0.7 * out.attention_loss + 0.3 * ctc)
    model.config.interctc_weight = 0.0  # the intermediate logits are still computed, but not in the loss
    with torch.no_grad():
        plain = model(features, attention_mask=mask, labels=labels)
    assert plain.interctc_loss is None
    torch.testing.assert_close(plain.loss, 0.7 * plain.attention_loss + 0.3 * plain.ctc_loss)


def test_self_conditioning_adds_the_projected_posteriors_to_the_next_layer(tokenizer):
    conditioned = tiny_model(tokenizer, **CONFORMER, interctc_layers=[1], interctc_weight=0.5, self_conditioning=True)
    plain = tiny_model(tokenizer, **CONFORMER, interctc_layers=[1], interctc_weight=0.5)
    assert plain.load_state_dict(conditioned.state_dict(), strict=False).unexpected_keys == [
        "model.encoder.conditioning.weight", "model.encoder.conditioning.bias"]  # fmt: skip
    features, mask, labels = batch(len(tokenizer))
    with torch.no_grad():
        differ = conditioned(features, attention_mask=mask, labels=labels).encoder_last_hidden_state
        assert not torch.allclose(differ, plain(features, attention_mask=mask, labels=labels).encoder_last_hidden_state)
        conditioned.model.encoder.conditioning.weight.zero_()
        conditioned.model.encoder.conditioning.bias.zero_()
        torch.testing.assert_close(
            conditioned(features, attention_mask=mask, labels=labels).encoder_last_hidden_state,
            plain(features, attention_mask=mask, labels=labels).encoder_last_hidden_state,
        )


# d_model 96, 3 encoder and 2 decoder layers, rotary, no dropout (so that only SpecAugment tells the views apart)
CR_CTC = dict(d_model=96, encoder_layers=3, decoder_layers=2, encoder_ffn_dim=192, decoder_ffn_dim=160,
              position_embedding="rotary", dropout=0.0, ctc_weight=0.4, ctc_consistency_weight=0.5)  # fmt: skip


def test_ctc_consistency_compares_each_view_with_the_other_under_its_own_masks(tokenizer):
    model = tiny_model(tokenizer, **CR_CTC, spec_augment_freq_masks=2, spec_augment_time_masks=2).train()
    features, mask, labels = batch(len(tokenizer))
    torch.manual_seed(1)
    out = model(features, attention_mask=mask, labels=labels)
    assert out.ctc_logits.shape[0] == out.logits.shape[0] == 4  # the batch twice
    lengths = out.encoder_output_lengths
    assert lengths.tolist() == [29, 18, 29, 18]
    assert not torch.allclose(out.ctc_logits[:2], out.ctc_logits[2:])  # each copy its own masks
    log_probs = out.ctc_logits.detach().log_softmax(-1)
    other = torch.cat([log_probs[2:], log_probs[:2]])
    expected = sum((other[i, :n].exp() * (other[i, :n] - log_probs[i, :n])).sum() for i, n in enumerate(lengths))
    torch.testing.assert_close(out.consistency_loss, expected / (labels >= 0).sum() / 2)
    assert out.consistency_loss > 0
    torch.testing.assert_close(out.loss, 0.6 * out.attention_loss + 0.4 * (out.ctc_loss + 0.5 * out.consistency_loss))
    out.loss.backward()
    assert model.model.encoder.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_ctc_consistency_without_augmentation_is_zero_and_leaves_the_other_losses(tokenizer):
    # two identical views: no divergence, and the means of the duplicated batch are the batch's own
    features, mask, labels = batch(len(tokenizer))
    two = tiny_model(tokenizer, **CR_CTC, spec_augment_freq_masks=0, spec_augment_time_masks=0).train()
    one = tiny_model(tokenizer, **{**CR_CTC, "ctc_consistency_weight": 0.0}, spec_augment_freq_masks=0,
                     spec_augment_time_masks=0).train()  # fmt: skip
    got, expected = two(features, attention_mask=mask, labels=labels), one(features, attention_mask=mask, labels=labels)
    assert got.consistency_loss.item() == 0.0 and expected.consistency_loss is None
    for name in ("loss", "attention_loss", "ctc_loss"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name))
    # evaluation and decoding see one view
    with torch.no_grad():
        evaluated = two.eval()(features, attention_mask=mask, labels=labels)
    assert evaluated.consistency_loss is None and evaluated.ctc_logits.shape[0] == 2


def test_conformer_with_self_conditioning_saves_loads_and_decodes_with_the_cache(tokenizer, tmp_path):
    model = tiny_model(tokenizer, **CONFORMER, interctc_layers=[2], interctc_weight=0.3, self_conditioning=True)
    model.save_pretrained(tmp_path)
    loaded, info = SpeechSeqForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert loaded.model.encoder._ctc_head[0] is loaded.ctc_head
    features, mask, labels = batch(len(tokenizer))
    with torch.no_grad():
        expected = model(features, attention_mask=mask, labels=labels)
        got = loaded.eval()(features, attention_mask=mask, labels=labels)
        torch.testing.assert_close(got.logits, expected.logits)
        torch.testing.assert_close(got.interctc_loss, expected.interctc_loss)
        cached = loaded.generate(features, attention_mask=mask, num_beams=1, max_new_tokens=8)
        uncached = GenerationMixin.generate(loaded, features, attention_mask=mask, max_new_tokens=8, use_cache=False)
    assert torch.equal(cached, uncached)


def test_conformer_gradient_checkpointing_gives_the_same_gradients(tokenizer):
    features, mask, labels = batch(len(tokenizer))
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(tokenizer, **CONFORMER, interctc_layers=[1], interctc_weight=0.3).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        model(features, attention_mask=mask, labels=labels).loss.backward()
        grads.append(model.model.encoder.layers[0].conv.depthwise.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize(
    "overrides,message",
    [(dict(encoder_block="branchformer"), "encoder_block"), (dict(conv_kernel_size=8), "odd"),
     (dict(conv_norm="group_norm"), "conv_norm"), (dict(interctc_layers=[2]), r"\[1, 1\]"),
     (dict(interctc_layers=[1, 1]), "distinct"), (dict(interctc_weight=0.3), "need interctc_layers"),
     (dict(self_conditioning=True), "need interctc_layers"),
     (dict(interctc_layers=[1], interctc_weight=0.3, ctc_weight=0.0), "needs ctc_weight"),
     (dict(ctc_consistency_weight=-0.1), "non-negative"), (dict(ctc_consistency_weight=True), "non-negative"),
     (dict(ctc_consistency_weight=0.2, ctc_weight=0.0), "needs ctc_weight")],
)  # fmt: skip
def test_conformer_and_interctc_options_are_checked(overrides, message):
    with pytest.raises(ValueError, match=message):
        SpeechSeqConfig.from_preset("tiny", **overrides)


def test_small_conformer_preset_fits_the_parameter_limit():
    for vocab_size in (40, 5000):
        with torch.device("meta"):
            model = SpeechSeqForConditionalGeneration(SpeechSeqConfig.from_preset("small-conformer", vocab_size=vocab_size))
        assert sum(p.numel() for p in model.parameters()) <= 30_000_000
        assert isinstance(model.model.encoder.layers[0], ConformerLayer)
