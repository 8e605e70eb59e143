import pytest
import torch

from speechseq import SpeechSeqForConditionalGeneration
from speechseq.modeling_speechseq import shift_tokens_right

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


@pytest.mark.parametrize("subsampling, lstm", [("conv2d", False), ("conv2d", True), ("conv1d", False)])
def test_padding_in_a_batch_changes_nothing(tokenizer, subsampling, lstm):
    model = tiny_model(tokenizer, subsampling=subsampling, subsampling_lstm=lstm)
    features, mask, labels = batch(len(tokenizer))
    with torch.no_grad():
        batched = model(features, attention_mask=mask, labels=labels)
        for i, (frames, tokens) in enumerate([(120, 9), (77, 5)]):
            alone = model(features[i : i + 1, :frames], labels=labels[i : i + 1, :tokens])
            n = alone.encoder_last_hidden_state.shape[1]
            assert batched.encoder_output_lengths[i] == n
            torch.testing.assert_close(batched.encoder_last_hidden_state[i, :n], alone.encoder_last_hidden_state[0])
            torch.testing.assert_close(batched.logits[i, :tokens], alone.logits[0])
            torch.testing.assert_close(batched.ctc_logits[i, :n], alone.ctc_logits[0])


def test_cached_decoding_equals_uncached(tokenizer):
    model = tiny_model(tokenizer)
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


def test_greedy_generate_equals_an_argmax_loop(tokenizer):
    model = tiny_model(tokenizer, seed=3)
    features, mask, _ = batch(len(tokenizer))
    generated = model.generate(features, attention_mask=mask, max_new_tokens=12)
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
        return_dict_in_generate=True, output_scores=True,
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
    for i in range(2):
        path = out.ctc_logits[i, : out.encoder_output_lengths[i]].argmax(-1).tolist()
        expected = [t for j, t in enumerate(path) if t != 5 and (j == 0 or t != path[j - 1])]
        row = generated[i].tolist()
        assert row[0] == 3 and row[len(expected) + 1] == 4
        assert row[1 : len(expected) + 1] == expected
        assert all(t == 0 for t in row[len(expected) + 2 :])
    model.generation_config.decoding = "ctc"
    assert torch.equal(model.generate(features, attention_mask=mask), generated)
    with pytest.raises(ValueError, match="decoding must be"):
        model.generate(features, decoding="rnnt")
