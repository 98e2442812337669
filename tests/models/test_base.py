"""The sliding window written once in the base class."""

from __future__ import annotations

import torch

from arlm.vocab import CharVocab

from conftest import make_gpt


@torch.no_grad()
def test_sliding_window_matches_its_definition():
    v = CharVocab(list("abcdefgh"))
    model = make_gpt(v, block_size=8)
    g = torch.Generator().manual_seed(0)
    ids = torch.cat([torch.tensor([v.bos_id]), torch.randint(0, 8, (45,), generator=g)])
    for stride in (1, 3, 4, 8):
        got = model.sequence_log_probs(ids, stride=stride)
        assert got.shape == (45,)
        for t in range(45):
            start = 0 if t < 8 else ((t - 8) // stride + 1) * stride
            lp = torch.log_softmax(model.logits(ids[None, start : t + 1])[0, -1].double(), -1)[ids[t + 1]]
            assert abs(float(lp) - float(got[t])) < 1e-12, (stride, t)
            assert t - start < 8 and (t < 8 or t - start >= 8 - stride)  # context between block-stride and block
