"""The training-loop options of issue 24: weight EMA, epoch batch order, Muon weight decay and momentum warm-up."""

from __future__ import annotations

import pytest
import torch

from arlm import checkpoint
from arlm import training as T
from arlm.errors import ArlmError
from arlm.training import run as C
from arlm.training.batches import EpochOrder
from arlm.training.ema import WeightEMA
from arlm.training.muon import MuonAdamW
from arlm.training.optimizer import set_step_hyperparameters
from arlm.training.schedule import planned_passes
from arlm.training.settings import auto_weight_decay, check_settings
from arlm.vocab import CharVocab

from test_train import current_weights, losses, make, settings

#: every option on, model and loop
MODEL_OPTIONS = dict(qk_norm=True, mlp_act="relu2", zero_init=True, logit_softcap=15.0, value_residual=True,
                     unet_skips=True, tie_word_embeddings=False, n_layer=2)
LOOP_OPTIONS = dict(optimizer="muon", muon_lr=0.02, ema_decay=0.9, batch_order="epochs", muon_weight_decay=0.5,
                    muon_momentum_warmup=5, precision="fp32")


def make_with(**model_options):
    model, vocab, train, val = make("gpt", "file", dropout=0.0)
    torch.manual_seed(0)
    model, _ = C.build_model("gpt", vocab, n_head=2, n_embd=16, block_size=16, dropout=0.0, **model_options)
    return model, vocab, train, val


def test_resume_is_exact_with_every_option(tmp_path):
    """EMA averages travel in training_state (ema.NAME), the epoch order depends only on the step, Muon's
    momentum warm-up only on the step: an interrupted run resumes bit for bit."""
    a, b = tmp_path / "a", tmp_path / "b"
    model, vocab, train, val = make_with(**MODEL_OPTIONS)
    T.run_training(model, vocab, train, val, settings("file", **LOOP_OPTIONS), a, progress=False)
    model, vocab, train, val = make_with(**MODEL_OPTIONS)
    T.run_training(model, vocab, train, val, settings("file", **LOOP_OPTIONS), b, stop_after_steps=6, progress=False)
    C.resume(b)
    assert losses(a) == losses(b) and len(losses(a)) == 12
    ta, _ = T.read_state(a / T.STATE_FILE)
    tb, _ = T.read_state(b / T.STATE_FILE)
    assert any(k.startswith("ema.") for k in ta) and ta.keys() == tb.keys()
    assert all(torch.equal(ta[k], tb[k]) for k in ta if k.startswith(("model.", "optim.", "ema.", "best.")))


def test_saved_model_and_val_loss_are_the_ema(tmp_path):
    out = tmp_path / "run"
    model, vocab, train, val = make_with()
    s = settings("file", ema_decay=0.8, eval_interval=12, lr=3e-2)
    summary = T.run_training(model, vocab, train, val, s, out, progress=False)
    tensors, _ = T.read_state(out / T.STATE_FILE)
    loaded, _, _ = checkpoint.load(out)
    assert summary["best_step"] == 12  # evaluated at 0 and 12: the trained average wins
    for n, p in loaded.named_parameters():
        assert torch.equal(p, tensors[f"ema.{n}"]), n
    assert any(not torch.equal(tensors[f"ema.{n}"], tensors[f"model.{n}"]) for n, _ in loaded.named_parameters())
    # the logged val loss is the EMA model's
    batches = T.eval_batches(val, "file", s.batch_size, s.block_size, s.eval_iters, s.seed)
    from arlm.training.parts import estimate_val_loss
    import contextlib

    loaded.train()
    ev = estimate_val_loss(loaded, batches, torch.device("cpu"), contextlib.nullcontext, T.distributed.Dist())
    assert ev == pytest.approx(summary["best_val_loss"], abs=1e-6)


def test_weight_ema_averages_with_a_warmed_up_decay():
    lin = torch.nn.Linear(3, 2)
    ema = WeightEMA(lin, 0.9)
    w0 = lin.weight.detach().clone()
    with torch.no_grad():
        lin.weight.add_(1.0)
    ema.update(0)  # decay min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.avg[0], w0 + 0.9)
    with torch.no_grad():
        lin.weight.add_(1.0)
    ema.update(100)  # decay 0.9
    assert torch.allclose(ema.avg[0], 0.9 * (w0 + 0.9) + 0.1 * (w0 + 2.0))
    trained = lin.weight.detach().clone()
    with ema.swapped_in():
        assert torch.equal(lin.weight, ema.avg[0])
    assert torch.equal(lin.weight, trained)


def test_epoch_order_visits_every_window_once_per_epoch_and_depends_only_on_the_step():
    vocab = CharVocab.train(["abcdefghij"])
    text = "".join(chr(97 + i % 10) for i in range(1000))
    data = T.TokenData.from_documents(vocab, [text])  # 1002 tokens
    order = EpochOrder(data, 16, seed=3)
    W, B = order.W, 4
    assert W == (1002 - 16) // 16
    for step in range(3 * W // B):  # across epoch boundaries
        x, y = order.batch(data, step, B)
        assert x.shape == y.shape == (B, 16) and torch.equal(x[:, 1:], y[:, :-1])
    fresh = EpochOrder(data, 16, seed=3)
    assert torch.equal(fresh.batch(data, 7, B)[0], order.batch(data, 7, B)[0])  # no hidden state
    # each epoch: W distinct windows, all at one offset modulo 16
    for e in range(2):
        off, perm = order._epoch(e)
        assert sorted(perm.tolist()) == list(range(W)) and 0 <= off < 16
    full = torch.cat([order.batch(data, s, B)[0] for s in range(W // B)])  # first W // B * B windows of epoch 0
    off, perm = order._epoch(0)
    expect = torch.stack([data.ids[off + j * 16: off + j * 16 + 16] for j in perm[: len(full)].tolist()])
    assert torch.equal(full, expect)


@pytest.mark.parametrize("exact_max", [1 << 24, 10])
def test_epoch_order_of_a_large_text_is_a_bijection(monkeypatch, exact_max):
    """randperm, or above EXACT_PERMUTATION_MAX windows the affine order: every window once an epoch."""
    from arlm.training import batches

    monkeypatch.setattr(batches, "EXACT_PERMUTATION_MAX", exact_max)
    data = T.TokenData(torch.arange(1000), torch.tensor([0, 1000]))  # token i at position i: x[:, 0] is the start
    order = EpochOrder(data, 16, seed=1)
    for e in range(2):
        starts = torch.cat([order.batch(data, s, 1)[0][:, 0] for s in range(e * order.W, (e + 1) * order.W)])
        off, _ = order._epoch(e)
        assert sorted(starts.tolist()) == [off + 16 * j for j in range(order.W)]
    assert isinstance(order._epoch(0)[1], tuple) == (exact_max == 10)


def test_bad_loop_options_are_refused():
    with pytest.raises(ArlmError, match="--ema-decay"):
        check_settings(settings("file", ema_decay=1.0))


def test_muon_momentum_warmup_and_weight_decay():
    p = torch.nn.Parameter(torch.ones(4, 4))
    opt = MuonAdamW([{"params": [p], "use_muon": True, "weight_decay": 0.5}], lr=0.1)
    s = settings("file", muon_momentum_warmup=10)
    for step, mu in ((0, 0.85), (5, 0.90), (10, 0.95), (40, 0.95)):
        set_step_hyperparameters(opt, s, 0.1, step)
        assert opt.param_groups[0]["momentum"] == pytest.approx(mu) and opt.param_groups[0]["lr"] == 0.1
    p.grad = torch.zeros(4, 4)  # no gradient: the step is the decay alone, W (1 - lr wd)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((4, 4), 1 - 0.1 * 0.5))
    opt.param_groups[0]["momentum"] = 0.9
    set_step_hyperparameters(opt, settings("file"), 0.1, 0)  # no warm-up: the momentum is left alone
    assert opt.param_groups[0]["momentum"] == 0.9


def test_on_off_flags_set_the_field_both_ways():
    """--NAME / --no-NAME (optional bools): each sets its value; neither leaves the family's default."""
    import argparse

    from arlm.cli.flags import add_family_flags, given
    from arlm.models.registry import family

    p = argparse.ArgumentParser()
    add_family_flags(p, "gpt")
    gpt = family("gpt")
    assert given(p.parse_args(["--no-tie-word-embeddings", "--qk-norm"]), gpt) == {
        "tie_word_embeddings": False, "qk_norm": True}
    assert given(p.parse_args(["--tie-word-embeddings", "--no-qk-norm"]), gpt) == {
        "tie_word_embeddings": True, "qk_norm": False}
    assert given(p.parse_args([]), gpt) == {}


def test_planned_passes_and_the_auto_weight_decay():
    s = settings("file", max_steps=100)  # 8 x 16 tokens a step
    assert planned_passes(s, 0, 0.0, 1600) == pytest.approx(8.0)
    timed = settings("file", max_steps=None, max_time=60.0)
    assert planned_passes(timed, 0, 0.0, 1600) is None  # nothing known before the first step
    assert planned_passes(timed, 10, 6.0, 1600) == pytest.approx(8.0)  # 100 steps by the end
    both = settings("file", max_steps=50, max_time=60.0)
    assert planned_passes(both, 10, 6.0, 1600) == pytest.approx(4.0)
    assert [auto_weight_decay(p) for p in (None, 3.0, 15.0, 22.5, 30.0, 300.0)] == pytest.approx(
        [0.0, 0.0, 0.0, 0.25, 0.5, 0.5])


@pytest.mark.parametrize("many", [False, True])
def test_auto_regularisation_is_the_explicit_one_its_planned_passes_give(tmp_path, many):
    """gpt's default (muon_weight_decay, ema_decay None): below 15 planned passes over train, no weight decay and
    the trained weights saved; from 30 passes, weight decay 0.5 and the EMA 0.999 saved, bit for bit as if given."""
    model, vocab, train, val = make_with()
    if many:  # 12 steps of 8 x 16 tokens over 40 training tokens: 38 passes
        train = T.TokenData(train.ids[:40], torch.tensor([0, 40]))
    runs = {}
    explicit = dict(muon_weight_decay=0.5, ema_decay=0.999) if many else dict(muon_weight_decay=0.0, ema_decay=0.0)
    for name, opts in (("auto", dict(muon_weight_decay=None, ema_decay=None)), ("explicit", explicit)):
        model, *_ = make_with()
        s = settings("file", optimizer="muon", batch_order="random", precision="fp32", **opts)
        T.run_training(model, vocab, train, None, s, tmp_path / name, progress=False)  # no val: the last is saved
        runs[name] = T.read_state(tmp_path / name / T.STATE_FILE)[0]
        loaded, _, _ = checkpoint.load(tmp_path / name)
        runs[name + " saved"] = {n: p.detach() for n, p in loaded.named_parameters()}
    a, e = runs["auto"], runs["explicit"]
    assert all(torch.equal(a[k], e[k]) for k in e if k.startswith(("model.", "optim.")))
    saved = runs["auto saved"]
    assert all(torch.equal(saved[n], runs["explicit saved"][n]) for n in saved)
    source = "ema." if many else "model."
    assert all(torch.equal(saved[n], a[source + n]) for n in saved)
    assert any(not torch.equal(a["ema." + n], a["model." + n]) for n in saved)  # the average is kept either way
