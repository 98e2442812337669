"""GPT family: parity with Hugging Face GPT-2, KV cache, fixed-initialisation regression."""

from __future__ import annotations

import pytest
import torch

from arlm.models.gpt import GPTConfig, GPTModel


def tiny(seed=0, **kw) -> GPTModel:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=12, bos_id=10, eos_id=11, n_layer=2, n_head=2, n_embd=16, block_size=8, dropout=0.0, bias=True)
    cfg.update(kw)
    return GPTModel(GPTConfig(**cfg)).eval()


def randomise(model: GPTModel, seed: int = 1) -> None:
    """Non-trivial values everywhere (LayerNorm gains, biases), so parity tests mean something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.dim() == 1 and p.shape[0] == model.config.n_embd else 0.0))


def test_parity_with_huggingface_gpt2():
    transformers = pytest.importorskip("transformers")
    model = tiny(n_layer=3, n_head=4, n_embd=32, block_size=16, vocab_size=21, bos_id=19, eos_id=20)
    randomise(model)
    c = model.config
    hf_cfg = transformers.GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=c.layer_norm_epsilon, tie_word_embeddings=True,
    )
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    ours = model.state_dict()
    sd = {}
    for name, t in ours.items():
        if name == "lm_head.weight":
            continue
        hf_name = "transformer." + name
        # HF's Conv1D stores weights as [in, out]; nn.Linear as [out, in].
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            t = t.t()
        sd[hf_name] = t.clone()
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected
    assert all(k in ("lm_head.weight",) or k.endswith(".attn.bias") or k.endswith(".attn.masked_bias") for k in missing)
    hf.tie_weights()
    ids = torch.randint(0, 19, (3, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(ids).logits  # [3, 16, V]
        got = model.logits(ids)
    keep = [i for i in range(c.vocab_size) if i != c.bos_id]
    torch.testing.assert_close(got[..., keep], ref[..., keep], atol=1e-5, rtol=0)
    assert torch.isneginf(got[..., c.bos_id]).all()


def test_kv_cache_matches_logits_across_window_slides():
    model = tiny()
    randomise(model, seed=3)
    ids = torch.randint(0, 10, (2, 21), generator=torch.Generator().manual_seed(4))
    state = None
    for t in range(ids.shape[1]):
        out, state = model.step(ids[:, t], state)
        ref = model.logits(ids[:, max(0, t + 1 - model.block_size) : t + 1])[:, -1]
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_prefill_then_step_and_branching_state():
    model = tiny()
    randomise(model, seed=5)
    ids = torch.randint(0, 10, (1, 6), generator=torch.Generator().manual_seed(6))
    out, state = model.prefill(ids[:, :4])
    torch.testing.assert_close(out, model.logits(ids[:, :4])[:, -1], atol=1e-5, rtol=0)
    a, _ = model.step(ids[:, 4], state)
    b, _ = model.step(ids[:, 5], state)  # the same state again: it was not modified
    torch.testing.assert_close(a, model.logits(ids[:, :5])[:, -1], atol=1e-5, rtol=0)
    torch.testing.assert_close(b, model.logits(torch.cat([ids[:, :4], ids[:, 5:6]], 1))[:, -1], atol=1e-5, rtol=0)


def test_logits_rejects_too_long_input():
    with pytest.raises(ValueError, match="block_size"):
        tiny().logits(torch.zeros(1, 9, dtype=torch.long))


def test_bad_config():
    with pytest.raises(ValueError, match="divisible"):
        tiny(n_head=3)


def test_head_tied_to_embedding():
    model = tiny()
    assert model.lm_head.weight is model.wte.weight


def test_fixed_initialisation_regression():
    # Seeded initialisation -> fixed numbers. A change here means the
    # initialisation or the forward pass changed: check it was intended.
    model = tiny(seed=0)
    ids = torch.tensor([[10, 1, 2, 3, 4, 5, 6, 7]])
    with torch.no_grad():
        logits = model.logits(ids)
    nll = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    assert model.num_parameters() == EXPECTED_PARAMS
    torch.testing.assert_close(logits[0, -1, :4], torch.tensor(EXPECTED_LAST_LOGITS), atol=1e-6, rtol=0)
    assert nll.item() == pytest.approx(EXPECTED_NLL, abs=1e-6)


EXPECTED_PARAMS = 6912
EXPECTED_LAST_LOGITS = [-0.036241572, 0.085552126, -0.032746665, -0.020166807]
EXPECTED_NLL = 2.4143474102020264


def test_cpu_training_kernels_match_pytorch():
    # Training on CPU uses hand-written attention and GELU (arlm.models.gpt.FAST_CPU_TRAINING);
    # their values and gradients must be PyTorch's (SDPA, F.gelu tanh) up to rounding.
    from arlm.models import gpt as G

    model = tiny(n_layer=2, n_head=4, n_embd=32, block_size=16, vocab_size=21, bos_id=19, eos_id=20).train()
    randomise(model, seed=7)
    ids = torch.randint(0, 19, (3, 16), generator=torch.Generator().manual_seed(8))
    targets = torch.randint(0, 19, (3, 16), generator=torch.Generator().manual_seed(9))

    def run(fast: bool):
        old = G.FAST_CPU_TRAINING
        G.FAST_CPU_TRAINING = fast
        try:
            model.zero_grad(set_to_none=True)
            logits = model.logits(ids)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
            loss.backward()
            return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}
        finally:
            G.FAST_CPU_TRAINING = old

    fast_logits, fast_grads = run(True)
    ref_logits, ref_grads = run(False)
    assert torch.isneginf(fast_logits[..., 19]).all()
    keep = [i for i in range(21) if i != 19]
    torch.testing.assert_close(fast_logits[..., keep], ref_logits[..., keep], atol=1e-5, rtol=0)
    for n in ref_grads:
        torch.testing.assert_close(fast_grads[n], ref_grads[n], atol=1e-5, rtol=1e-4, msg=n)
    with torch.no_grad():  # inference never takes the training kernels: scores are unchanged
        torch.testing.assert_close(model.logits(ids), ref_logits, atol=0, rtol=0)


def test_cpu_training_kernels_gradcheck():
    from arlm.models.gpt import _CausalAttention, _GeluTanh

    g = torch.Generator().manual_seed(10)
    x = (torch.randn(3, 5, generator=g, dtype=torch.double) * 3).requires_grad_()
    assert torch.autograd.gradcheck(_GeluTanh.apply, (x,))
    torch.testing.assert_close(_GeluTanh.apply(x), torch.nn.functional.gelu(x, approximate="tanh"), atol=1e-12, rtol=0)
    qkv = torch.randn(2, 5, 3 * 8, generator=g, dtype=torch.double).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: _CausalAttention.apply(t, 2), (qkv,))
    q, k, v = (t.view(2, 5, 2, 4).transpose(1, 2) for t in qkv.split(8, 2))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(2, 5, 8)
    torch.testing.assert_close(_CausalAttention.apply(qkv, 2), ref, atol=1e-12, rtol=0)
