import io
import math

import pytest
import torch

from speechseq import SpeechSeqForConditionalGeneration
from speechseq.optimization import MuonWithAdamW, orthogonalize

from conftest import tiny_model


@pytest.mark.parametrize("shape", [(3, 96, 96), (2, 96, 240), (2, 240, 96)], ids=["square", "wide", "tall"])
def test_orthogonalize_keeps_the_singular_vectors_and_pulls_the_singular_values_towards_one(shape):
    updates = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # singular values spread over three orders of magnitude, as a gradient's are
    u, _, vh = torch.linalg.svd(updates, full_matrices=False)
    spread = torch.logspace(0, -3, u.shape[-1], dtype=torch.float64)
    updates = u @ torch.diag_embed(spread) @ vh
    got = orthogonalize(updates)
    assert got.shape == updates.shape
    values = torch.linalg.svdvals(got)
    assert values.max() < 1.25 and values[..., : u.shape[-1] // 2].min() > 0.6  # the quintic's band, not exactly 1
    polar = u @ vh  # the exact orthogonal factor
    cosine = (got * polar).sum(dim=(-2, -1)) / (got.norm(dim=(-2, -1)) * polar.norm(dim=(-2, -1)))
    assert (cosine > 0.9).all()
    torch.testing.assert_close(orthogonalize(7.0 * updates), got)  # the gradient's scale does not matter


def parameters_and_gradients(seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in ((48, 80), (80, 48), (48,))]
    grads = [[torch.randn(p.shape, generator=g) for p in params] for _ in range(3)]
    return params, grads


def test_the_adamw_groups_step_as_torch_adamw_does():
    ours, grads = parameters_and_gradients()
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    def groups(params):
        return [{"params": params[:2], "weight_decay": 0.1}, {"params": params[2:], "weight_decay": 0.0}]

    optimizers = [MuonWithAdamW(groups(ours), lr=1e-2, betas=(0.9, 0.98), eps=1e-6),
                  torch.optim.AdamW(groups(theirs), lr=1e-2, betas=(0.9, 0.98), eps=1e-6)]
    for step in grads:
        for params, optimizer in zip((ours, theirs), optimizers):
            for p, grad in zip(params, step):
                p.grad = grad.clone()
            optimizer.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_a_muon_step_is_the_orthogonalised_nesterov_momentum_at_adamw_scale():
    params, grads = parameters_and_gradients()
    optimizer = MuonWithAdamW([{"params": params[:2], "muon": True}, {"params": params[2:]}], lr=1e-2,
                              weight_decay=0.1, momentum=0.9)  # fmt: skip
    before = [p.detach().clone() for p in params[:2]]
    expected = []
    for p, grad in zip(before, grads[0]):  # first step: momentum = grad, Nesterov's update = grad + 0.9 * grad
        update = orthogonalize((1.9 * grad)[None])[0]
        expected.append(p * (1 - 1e-2 * 0.1) - 1e-2 * 0.2 * math.sqrt(80) * update)
    for p, grad in zip(params, grads[0]):
        p.grad = grad
    optimizer.step()
    for p, want in zip(params[:2], expected):
        torch.testing.assert_close(p.detach(), want)
    update_rms = torch.stack([(p.detach() * (1 - 1e-3) - q.detach()).pow(2).mean().sqrt()
                              for p, q in zip(before, params[:2])])  # fmt: skip
    assert ((update_rms / 1e-2 > 0.1) & (update_rms / 1e-2 < 0.3)).all()  # AdamW's RMS at its learning rate, about
    torch.testing.assert_close(optimizer.state[params[0]]["momentum_buffer"], grads[0][0])


def test_a_muon_group_takes_matrices_only():
    params, _ = parameters_and_gradients()
    with pytest.raises(ValueError, match=r"group 0 has parameters of shapes \[\(48,\)\]"):
        MuonWithAdamW([{"params": params[1:], "muon": True}])


def test_a_resumed_optimizer_steps_as_the_one_that_went_on():
    params, grads = parameters_and_gradients()
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]

    def make(ps):
        return MuonWithAdamW([{"params": ps[:2], "muon": True}, {"params": ps[2:]}], lr=1e-2)

    first = make(params)
    for p, grad in zip(params, grads[0]):
        p.grad = grad
    first.step()
    saved = io.BytesIO()  # through a file, as a checkpoint goes: a state dict in memory shares its tensors
    torch.save(first.state_dict(), saved)
    saved.seek(0)
    state = torch.load(saved)
    for p, copy in zip(params, copies):
        copy.data.copy_(p.detach())
    resumed = make(copies)
    resumed.load_state_dict(state)
    for ps, optimizer in ((params, first), (copies, resumed)):
        for step in grads[1:]:
            for p, grad in zip(ps, step):
                p.grad = grad.clone()
            optimizer.step()
    for a, b in zip(params, copies):
        torch.testing.assert_close(a, b)


def test_muon_trains_the_model_with_the_layers_matrices_alone(tokenizer):
    """Through the model's own parameters: the layers' matrices in the Muon group, embeddings, heads, the front end,
    norms and biases with AdamW; the loss falls on a repeated batch in either."""
    model: SpeechSeqForConditionalGeneration = tiny_model(tokenizer, d_model=96, encoder_layers=3, decoder_layers=2,
                                                          encoder_ffn_dim=192, decoder_ffn_dim=160).train()  # fmt: skip
    names = dict(model.named_parameters())
    hidden = [name for name, p in names.items() if p.dim() == 2 and ".layers." in name]
    assert {"model.encoder.layers.2.mlp.fc1.weight", "model.decoder.layers.1.encoder_attn.k_proj.weight"} <= set(hidden)
    assert not {"ctc_head.weight", "model.decoder.embed_tokens.weight", "model.encoder.subsampling.out.weight"} & set(
        hidden)
    optimizer = MuonWithAdamW([{"params": [names[n] for n in hidden], "muon": True},
                               {"params": [p for n, p in names.items() if n not in hidden]}], lr=3e-3)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 100, 80, generator=g)
    labels = torch.tensor([[7, 8, 9, 10, 4], [11, 12, 13, 4, -100]])
    losses = []
    for _ in range(15):
        loss = model(features, labels=labels).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0]
