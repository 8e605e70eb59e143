"""Muon for the layers' weight matrices and AdamW for every other parameter, as one optimizer that the Trainer's
learning-rate schedule drives (`speechseq-train --muon`)."""

import math
from collections import defaultdict

import torch
from torch.optim.adam import adam

# the quintic iteration's coefficients (Jordan et al., 2024), as torch.optim.Muon has them
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def orthogonalize(updates: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """A stack of matrices `(n, rows, cols)`, each mapped near the orthogonal factor of its polar decomposition (its
    singular values pushed towards 1) by `steps` Newton-Schulz iterations, in the stack's own dtype."""
    a, b, c = NEWTON_SCHULZ
    x = updates / (updates.norm(dim=(-2, -1), keepdim=True) + eps)  # spectral norm at most 1
    tall = x.shape[-2] > x.shape[-1]
    if tall:  # iterate on the smaller Gram matrix
        x = x.mT
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon (Jordan et al., 2024) for the parameter groups marked `muon=True` (2-D weight matrices), AdamW for the
    others, in one optimizer, so that one learning-rate schedule, one state dict and one `zero_grad` serve both.

    A Muon group's update is its gradient's Nesterov momentum, orthogonalised (`orthogonalize`) and scaled by
    `0.2 * sqrt(max(rows, cols))`, so that its RMS matches AdamW's and AdamW's learning rate and weight decay carry
    over (Liu et al., 2025, "Muon is scalable for LLM training"; torch.optim.Muon's `adjust_lr_fn="match_rms_adamw"`).
    torch.optim.Muon itself orthogonalises in bfloat16, which CPUs without bf16 arithmetic (AVX2) emulate: 1.8 s a
    step for the demo's model on 2 cores, against 0.09 s here in float32 with the matrices of a shape stacked.

    Args:
        params: parameter groups; `muon=True` in a group gives it Muon (every parameter 2-D), otherwise AdamW.
        lr, weight_decay: both optimizers' (decoupled weight decay).
        betas, eps: AdamW's.
        momentum, nesterov, ns_steps: Muon's.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5):  # fmt: skip
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_steps=ns_steps, muon=False)  # fmt: skip
        super().__init__(params, defaults)
        for index, group in enumerate(self.param_groups):
            shapes = [tuple(p.shape) for p in group["params"] if p.dim() != 2]
            if group["muon"] and shapes:
                raise ValueError(f"Muon orthogonalises matrices: parameter group {index} has parameters of shapes "
                                 f"{shapes}; give them a group without muon=True (AdamW)")  # fmt: skip

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self._muon_step if group["muon"] else self._adamw_step)(group, params)
        return loss

    def _muon_step(self, group: dict, params: list[torch.Tensor]) -> None:
        momentum, lr = group["momentum"], group["lr"]
        grads = [p.grad for p in params]
        buffers = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p)) for p in params]
        torch._foreach_mul_(buffers, momentum)
        torch._foreach_add_(buffers, grads)
        updates = torch._foreach_add(grads, buffers, alpha=momentum) if group["nesterov"] else buffers
        by_shape = defaultdict(list)
        for index, update in enumerate(updates):
            by_shape[update.shape].append(index)
        for shape, indices in by_shape.items():
            orthogonal = orthogonalize(torch.stack([updates[i] for i in indices]), group["ns_steps"])
            scale = 0.2 * math.sqrt(max(shape))
            for update, i in zip(orthogonal, indices):
                params[i].mul_(1 - lr * group["weight_decay"]).add_(update.to(params[i].dtype), alpha=-lr * scale)

    def _adamw_step(self, group: dict, params: list[torch.Tensor]) -> None:
        states = []
        for p in params:
            state = self.state[p]
            if not state:
                state.update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            states.append(state)
        beta1, beta2 = group["betas"]
        adam(params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
             [s["step"] for s in states], decoupled_weight_decay=True, amsgrad=False, beta1=beta1, beta2=beta2,
             lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)  # fmt: skip
