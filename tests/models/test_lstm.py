"""LSTM family: equations against a hand-written reference, state carrying, regression."""

from __future__ import annotations

import pytest
import torch

import arlm.models.lstm as lstm_mod
from arlm.models.lstm import LSTMConfig, LSTMModel


def tiny(seed=0, **kw) -> LSTMModel:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=12, bos_id=10, eos_id=11, n_layer=2, n_embd=8, n_hidden=16, dropout=0.0)
    cfg.update(kw)
    return LSTMModel(LSTMConfig(**cfg)).eval()


def reference_logits(model: LSTMModel, ids: torch.Tensor) -> torch.Tensor:
    """The LSTM equations (Hochreiter & Schmidhuber 1997, with forget gate) written out."""
    B, T = ids.shape
    x = model.embedding.weight[ids]  # [B, T, E]
    for layer in range(model.config.n_layer):
        w_ih = getattr(model.lstm, f"weight_ih_l{layer}")
        w_hh = getattr(model.lstm, f"weight_hh_l{layer}")
        b = getattr(model.lstm, f"bias_ih_l{layer}") + getattr(model.lstm, f"bias_hh_l{layer}")
        H = w_hh.shape[1]
        h = torch.zeros(B, H)
        c = torch.zeros(B, H)
        outs = []
        for t in range(T):
            i, f, g, o = (x[:, t] @ w_ih.T + h @ w_hh.T + b).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        x = torch.stack(outs, 1)
    logits = model.head(x)
    logits[..., model.config.bos_id] = float("-inf")
    return logits


def test_matches_reference_equations():
    model = tiny()
    ids = torch.randint(0, 10, (3, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model.logits(ids), reference_logits(model, ids), atol=1e-5, rtol=0)


def test_step_carries_state():
    model = tiny()
    ids = torch.randint(0, 10, (2, 9), generator=torch.Generator().manual_seed(2))
    full = model.logits(ids)
    state = None
    for t in range(ids.shape[1]):
        out, state = model.step(ids[:, t], state)
        torch.testing.assert_close(out, full[:, t], atol=1e-5, rtol=0)
    h, c = state
    assert h.shape == c.shape == (2, 2, 16)


def test_chunked_scoring_equals_one_pass(monkeypatch):
    model = tiny()
    ids = torch.randint(0, 10, (50,), generator=torch.Generator().manual_seed(3))
    whole = model.sequence_log_probs(ids)
    monkeypatch.setattr(lstm_mod, "SCORE_CHUNK", 7)
    chunked = model.sequence_log_probs(ids)
    assert whole.dtype == torch.float64 and whole.shape == (49,)
    torch.testing.assert_close(chunked, whole, atol=1e-9, rtol=0)


def test_no_window():
    assert tiny().block_size is None


def test_bad_config():
    with pytest.raises(ValueError):
        tiny(n_hidden=0)


def test_fixed_initialisation_regression():
    model = tiny(seed=0)
    ids = torch.tensor([[10, 1, 2, 3, 4, 5, 6, 7]])
    with torch.no_grad():
        logits = model.logits(ids)
    nll = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    assert model.num_parameters() == EXPECTED_PARAMS
    torch.testing.assert_close(logits[0, -1, :4], torch.tensor(EXPECTED_LAST_LOGITS), atol=1e-6, rtol=0)
    assert nll.item() == pytest.approx(EXPECTED_NLL, abs=1e-6)


EXPECTED_PARAMS = 4140
EXPECTED_LAST_LOGITS = [0.016105682, -0.017928792, -0.010047187, -0.0050546266]
EXPECTED_NLL = 2.394500732421875
