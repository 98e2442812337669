"""The modded-nanoGPT options of the GPT (models/gpt_blocks.py): each computes what it claims, on the
inference path and on the CPU training path (hand-written kernels) alike."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from arlm.models import gpt_kernels
from arlm.models.gpt import GPTConfig, GPTModel
from arlm.models.gpt_blocks import soft_cap


def model(seed=0, **kw) -> GPTModel:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=11, bos_id=0, eos_id=1, n_layer=2, n_head=2, n_embd=16, block_size=8)
    cfg.update(kw)
    return GPTModel(GPTConfig(**cfg)).double()


IDS = torch.tensor([[0, 3, 4, 5, 9, 2, 7, 1], [0, 2, 2, 6, 8, 10, 3, 4]])


def test_qk_norm_makes_queries_and_keys_unit_rms_per_head():
    m = model(qk_norm=True).eval()
    att = m.h[0].attn
    seen = {}
    orig = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen["q"], seen["k"] = q, k
        return orig(q, k, v, **kw)

    x = torch.randn(2, 8, 16, dtype=torch.float64) * 5
    F.scaled_dot_product_attention = spy
    try:
        att(x)
    finally:
        F.scaled_dot_product_attention = orig
    for t in (seen["q"], seen["k"]):  # [B, H, T, D]
        assert torch.allclose(t.pow(2).mean(-1).sqrt(), torch.ones(t.shape[:3], dtype=t.dtype), atol=1e-4)  # eps 1e-6
    # the same projections without the norm are far from unit RMS: the norm did it
    q = att.c_attn(x)[..., :16].view(2, 8, 2, 8)
    assert (q.pow(2).mean(-1).sqrt() - 1).abs().max() > 0.1


def test_soft_cap_bounds_the_logits():
    a, b = model(logit_softcap=2.0).eval(), model(logit_softcap=0.0).eval()
    with torch.no_grad():
        for p in a.parameters():
            p.mul_(8)  # large logits
        b.load_state_dict(a.state_dict())
        za, zb = a.logits(IDS), b.logits(IDS)
    keep = torch.arange(11) != 0
    assert (za[..., keep].abs() <= 2.0).all() and zb[..., keep].abs().max() > 2.0
    assert torch.allclose(za[..., keep], 2.0 * torch.tanh(zb[..., keep] / 2.0))
    assert torch.equal(soft_cap(zb, 0.0), zb)


def test_zero_init_starts_with_zero_projections_and_a_uniform_prediction():
    m = model(zero_init=True, tie_word_embeddings=False)
    for block in m.h:
        assert not block.attn.c_proj.weight.any() and not block.mlp.c_proj.weight.any()
    assert not m.lm_head.weight.any()
    logp = torch.log_softmax(m.eval().logits(IDS), -1)  # every token but <bos> equally likely
    assert torch.allclose(logp[..., 1:], torch.full_like(logp[..., 1:], -math.log(10)))
    tied = model(zero_init=True)  # a tied head is the embedding: not zeroed
    assert tied.lm_head.weight.any() and not tied.h[0].attn.c_proj.weight.any()


def test_relu2_mlp():
    m = model(mlp_act="relu2").eval()
    x = torch.randn(3, 16, dtype=torch.float64)
    mlp = m.h[0].mlp
    assert torch.allclose(mlp(x), mlp.c_proj(F.relu(mlp.c_fc(x)) ** 2))


def test_unet_skips_exist_and_are_used():
    m = model(unet_skips=True, n_layer=2).eval()
    assert m.skip_weights.shape == (1,)  # encoder layer 0 -> layer 1
    x0 = m.wte(IDS) + m.wpe(torch.arange(8))
    with torch.no_grad():
        m.skip_weights.fill_(0.7)
        x1, _, _ = m.h[0](x0)
        x2, _, _ = m.h[1](x1 + 0.7 * x1)
        ref = m.lm_head(m.ln_f(x2))
        out = m.logits(IDS)
    assert torch.allclose(out[..., 1:], ref[..., 1:])
    assert not hasattr(model(unet_skips=True, n_layer=1), "skip_weights")
    assert model(unet_skips=True, n_layer=5).skip_weights.shape == (2,)


def test_value_residual_mixes_the_first_layers_values():
    m = model(value_residual=True, n_layer=3).eval()
    assert m.h[0].attn.value_mix is None and m.h[1].attn.value_mix.item() == 0.5
    plain = model(n_layer=3).eval()
    state = {k: v for k, v in m.state_dict().items() if "value_mix" not in k}
    plain.load_state_dict(state)
    with torch.no_grad():
        for b in m.h[1:]:
            b.attn.value_mix.zero_()  # lambda 0: the layer's own values, i.e. no value residual
        assert torch.allclose(m.logits(IDS), plain.logits(IDS))
        m.h[1].attn.value_mix.fill_(1.0)  # lambda 1: layer 1 attends over layer 0's values
        assert not torch.allclose(m.logits(IDS), plain.logits(IDS))


@pytest.mark.parametrize("pos_emb", ["learned", "rotary"])
def test_cpu_training_path_equals_pytorch_with_every_option(pos_emb):
    """Forward and gradients of the hand-written CPU kernels equal PyTorch's ops with every option on."""
    opts = dict(qk_norm=True, mlp_act="relu2", logit_softcap=5.0, value_residual=True, unet_skips=True,
                tie_word_embeddings=False, n_layer=3, pos_emb=pos_emb)
    outs = []
    for fast in (True, False):
        m = model(**opts).train()
        gpt_kernels.FAST_CPU_TRAINING = fast
        try:
            loss = F.cross_entropy(m.logits(IDS[:, :-1]).flatten(0, 1), IDS[:, 1:].flatten())
            loss.backward()
        finally:
            gpt_kernels.FAST_CPU_TRAINING = True
        outs.append((loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}))
    (la, ga), (lb, gb) = outs
    assert torch.allclose(la, lb, atol=1e-10)
    assert ga.keys() == gb.keys()
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=1e-9), n


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="mlp_act"):
        model(mlp_act="swish")
    with pytest.raises(ValueError, match="logit_softcap"):
        model(logit_softcap=-1.0)
