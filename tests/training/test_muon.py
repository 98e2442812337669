"""Muon (arlm.training.muon): the Newton–Schulz orthogonalisation, the update rule, the AdamW groups, the parameter split."""

from __future__ import annotations

import math

import pytest
import torch

from arlm.models.gpt import GPTConfig, GPTModel
from arlm.models.lstm import LSTMConfig, LSTMModel
from arlm.training.muon import MuonAdamW, hidden_matrices, newton_schulz5


def reference_newton_schulz(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Jordan et al.'s quintic iteration written out plainly, in float64."""
    x = g.double()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / x.norm()
    for _ in range(steps):
        a_ = x @ x.T
        x = 3.4445 * x + (-4.7750 * a_ + 2.0315 * a_ @ a_) @ x
    return x.T if tall else x


@pytest.mark.parametrize("shape", [(8, 24), (24, 8), (16, 16)])
def test_newton_schulz_matches_reference_and_orthogonalises(shape):
    torch.manual_seed(0)
    g = torch.randn(shape)
    o = newton_schulz5(g)
    assert o.shape == g.shape and o.dtype == torch.float32
    torch.testing.assert_close(o.double(), reference_newton_schulz(g), atol=2e-5, rtol=1e-4)
    # the singular values land near 1 (the speedrun's iteration leaves them in about [0.7, 1.2])...
    s = torch.linalg.svdvals(o)
    assert s.min() > 0.6 and s.max() < 1.25, s
    # ...and the singular vectors are g's: o is close to U V^T
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    assert torch.linalg.matrix_norm(o - u @ vh, ord=2) < 0.35
    # the speedrun's bfloat16 iteration: the same map up to bf16 rounding
    o16 = newton_schulz5(g, dtype=torch.bfloat16)
    assert o16.dtype == torch.bfloat16
    torch.testing.assert_close(o16.float(), o, atol=0.05, rtol=0)


def test_muon_step_is_nesterov_momentum_then_orthogonalised_update():
    torch.manual_seed(1)
    w = torch.nn.Parameter(torch.randn(12, 4))  # tall: the step is scaled by sqrt(12 / 4)
    w0 = w.detach().clone()
    grads = [torch.randn(12, 4), torch.randn(12, 4)]
    lr, ratio, mu = 1e-3, 20.0, 0.95
    opt = MuonAdamW([{"params": [w], "use_muon": True}], lr=lr, lr_ratio=ratio, momentum=mu)
    expected, buf = w0.double(), torch.zeros(12, 4, dtype=torch.float64)
    for g in grads:
        w.grad = g.clone()
        opt.step()
        buf = mu * buf + g.double()
        expected = expected - lr * ratio * math.sqrt(3.0) * reference_newton_schulz(g.double() + mu * buf)
    torch.testing.assert_close(w.detach().double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(opt.state[w]["momentum_buffer"].double(), buf)


def test_muon_refuses_a_vector():
    with pytest.raises(ValueError, match="2-D"):
        MuonAdamW([{"params": [torch.nn.Parameter(torch.zeros(3))], "use_muon": True}])


def test_adamw_groups_match_torch_adamw():
    torch.manual_seed(2)
    a = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    ours = MuonAdamW([{"params": a, "weight_decay": 0.1}], lr=1e-2, betas=(0.9, 0.99))
    ref = torch.optim.AdamW([{"params": b, "weight_decay": 0.1}], lr=1e-2, betas=(0.9, 0.99), foreach=False)
    for _ in range(3):
        gs = [torch.randn_like(p) for p in a]
        for p, q, g in zip(a, b, gs):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q)


def test_hidden_matrices_leave_embeddings_head_and_gains_to_adamw():
    gpt = GPTModel(GPTConfig(vocab_size=11, bos_id=9, eos_id=10, n_layer=2, n_head=2, n_embd=8, block_size=8))
    names = {id(p): n for n, p in gpt.named_parameters()}
    got = sorted(names[id(p)] for p in hidden_matrices(gpt))
    assert got == sorted(f"h.{i}.{m}.weight" for i in range(2)
                         for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))
    untied = GPTModel(GPTConfig(vocab_size=11, bos_id=9, eos_id=10, n_layer=1, n_head=2, n_embd=8, block_size=8,
                                tie_word_embeddings=False))
    assert all(p is not untied.lm_head.weight for p in hidden_matrices(untied))
    lstm = LSTMModel(LSTMConfig(vocab_size=11, bos_id=9, eos_id=10, n_embd=8, n_hidden=8))
    names = {id(p): n for n, p in lstm.named_parameters()}
    assert sorted(names[id(p)] for p in hidden_matrices(lstm)) == ["lstm.weight_hh_l0", "lstm.weight_ih_l0"]


def test_torch_muon_is_arlms_bfloat16_update_up_to_rounding():
    """torch.optim.Muon (torch >= 2.9) against MuonAdamW on one matrix: the same update up to bf16 rounding,
    not the same numbers. Its momentum is an average (m <- mu m + (1 - mu) g, Nesterov (1 - mu) g + mu m:
    arlm's u times (1 - mu), equal after the normalisation but for eps and rounding) and its Newton-Schulz
    always runs in bf16, where arlm's runs in float32 unless bf16 is asked for; it also has no AdamW groups
    (one state_dict for a resume), no rate ratio and no stacked iteration: arlm keeps its own optimizer."""
    torch.manual_seed(2)
    grads = [torch.randn(24, 8) for _ in range(3)]
    w0 = torch.randn(24, 8)
    out = {}
    for name in ("torch", "bfloat16", "float32"):
        w = torch.nn.Parameter(w0.clone())
        if name == "torch":
            opt = torch.optim.Muon([w], lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True,
                                   adjust_lr_fn="original")
        else:
            opt = MuonAdamW([{"params": [w], "use_muon": True}], lr=0.02, momentum=0.95, ns_dtype=name)
        for g in grads:
            w.grad = g.clone()
            opt.step()
        out[name] = w.detach() - w0  # [24, 8] the summed update of three steps
    scale = out["float32"].abs().max()
    torch.testing.assert_close(out["torch"], out["bfloat16"], atol=0.05 * scale, rtol=0)  # bf16 rounding through 5 iterations
    torch.testing.assert_close(out["torch"], out["float32"], atol=0.05 * scale, rtol=0)  # bf16 rounding through 5 iterations
    assert not torch.equal(out["torch"], out["bfloat16"]) and not torch.equal(out["torch"], out["float32"])
