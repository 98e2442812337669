"""Hugging Face export and import, checked by ``transformers`` itself (no hub access)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
import transformers
from safetensors.torch import load_file

from arlm.data import encode_document
from arlm.errors import ArlmError
from arlm.formats.hf import _check_positions, export_hf, import_hf
from arlm.lm import LM
from arlm.models.gpt import GPTConfig, GPTModel
from arlm.vocab import ByteVocab, CharVocab
from arlm.vocab.bpe import BPEVocab

from conftest import SHAKESPEARE, make_ngram, names_docs

TEXT = SHAKESPEARE.read_text(encoding="utf-8")
PROBE = TEXT[50_000:50_500]  # 500 characters


def _gpt(vocab, seed=0, **options) -> GPTModel:
    """A small GPT with spread-out weights, so that greedy decoding wanders and the logits differ."""
    torch.manual_seed(seed)
    m = GPTModel(GPTConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, n_layer=2, n_head=2, n_embd=32,
                           block_size=512, **options))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("weight") and p.dim() == 2:
                p.add_(torch.randn(p.shape, generator=g) * 0.15)
    return m.eval()


def _vocab(kind):
    docs = [TEXT[:30_000]]
    return {"char": lambda: CharVocab.train([TEXT]), "byte": ByteVocab, "bpe": lambda: BPEVocab.train(docs, 400)}[kind]()


def _hf_ids(vocab, ids):
    """arlm token ids in the exported model's ids: ``<bos>`` and ``<eos>`` are one token, the ids above ``<bos>`` move down."""
    eot = vocab.eos_id - (vocab.eos_id > vocab.bos_id)
    return [eot if i in (vocab.bos_id, vocab.eos_id) else i - (i > vocab.bos_id) for i in ids]


def _arlm_cli(*args) -> str:
    r = subprocess.run([sys.executable, "-m", "arlm", *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


#: texts per documents mode: names one per document, a passage with newlines as one document
DOCUMENTS = {"lines": ["emma", "jo", "maryann", ""], "file": [TEXT[50_000:50_300], "ROMEO:\nO, she doth teach"]}


@pytest.mark.parametrize("documents", ["lines", "file"])
@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_export_log_softmax_equals_arlm_log_probs_for_every_token(kind, documents, tmp_path):
    """transformers' log_softmax over the exported vocab is arlm's log_probs (every position, every token, 1e-5),
    the exported vocab is arlm's minus <bos>, and `arlm score --per-token` gives the same per-token figures."""
    vocab = _vocab(kind)
    LM(_gpt(vocab), vocab, documents).save(tmp_path / "m")
    lm = LM.load(tmp_path / "m")
    if kind == "char" and documents == "lines":  # the CLI once; the others call the function it calls
        _arlm_cli("export", tmp_path / "m", "--format", "hf", "--out", tmp_path / "hf")
    else:
        export_hf(lm, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert type(hf).__name__ == "GPT2LMHeadModel" and tok.is_fast
    assert hf.config.vocab_size == vocab.vocab_size - 1  # every token arlm can emit, and nothing else
    assert tok.bos_token_id == tok.eos_token_id == hf.config.bos_token_id == hf.config.eos_token_id
    keep = [i for i in range(vocab.vocab_size) if i != vocab.bos_id]
    for text in DOCUMENTS[documents]:
        ids = encode_document(vocab, text)  # [<bos>, x_1 … x_n, <eos>]
        hf_ids = tok(text).input_ids + [tok.eos_token_id]
        assert hf_ids == _hf_ids(vocab, ids)
        assert tok.decode(hf_ids, skip_special_tokens=True) == text
        with torch.no_grad():
            theirs = torch.log_softmax(hf(torch.tensor([hf_ids[:-1]])).logits[0].double(), -1)  # [T, V - 1]
            ours = torch.log_softmax(lm.model.logits(torch.tensor([ids[:-1]]))[0].double(), -1)  # [T, V]
        assert torch.isneginf(ours[:, vocab.bos_id]).all()
        assert (theirs - ours[:, keep]).abs().max().item() <= 1e-5, text
        if text == DOCUMENTS[documents][0]:
            if kind == "char":  # the CLI per mode; the other vocabs call the function it calls
                rows = json.loads(_arlm_cli("score", tmp_path / "m", text, "--per-token", "--json"))["token_logprobs"]
            else:
                rows = [{"token": t, "logprob": v} for t, v in lm.token_logprobs(text)]
            per_token = theirs.gather(1, torch.tensor(hf_ids[1:])[:, None])[:, 0]
            assert len(rows) == len(per_token)
            assert max(abs(r["logprob"] - v) for r, v in zip(rows, per_token.tolist())) <= 1e-5
            assert abs(per_token.sum().item() - lm.log_prob(text)) <= 1e-4


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_export_greedy_text_equals_arlm_sample(kind, tmp_path):
    vocab = _vocab(kind)
    LM(_gpt(vocab), vocab, "file").save(tmp_path / "m")
    lm = LM.load(tmp_path / "m")
    export_hf(lm, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    # greedy decoding: transformers' generate (from <|endoftext|>) against `arlm sample --temperature 0`
    out = hf.generate(torch.tensor([[tok.bos_token_id]]), max_new_tokens=100, do_sample=False)[0, 1:].tolist()
    sample = lm.generate("", max_new_tokens=100, temperature=0)
    assert out == _hf_ids(vocab, sample.token_ids) and len(out) == 100
    assert len(set(out)) > 3  # the weights make greedy decoding wander, so the comparison means something
    if kind == "char":
        r = json.loads(_arlm_cli("sample", tmp_path / "m", "--temperature", "0", "--max-new-tokens", "100", "--json"))
        assert r[0]["text"] == tok.decode(out, skip_special_tokens=True)
    assert sample.text == tok.decode(out, skip_special_tokens=True)


def test_char_export_refuses_an_unknown_character(tmp_path):
    """A character outside a char vocab becomes <unk>, an id past the model's vocab: the model refuses it."""
    vocab = CharVocab.train(["abc "])
    export_hf(LM(_gpt(vocab), vocab, "file"), tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ids = tok("ab é").input_ids
    assert tok.unk_token == "<unk>" and ids[-1] == tok.unk_token_id == hf.config.vocab_size
    assert ids[:-1] == _hf_ids(vocab, encode_document(vocab, "ab ", eos=False))
    with pytest.raises(IndexError):
        hf(torch.tensor([ids]))


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_import_of_an_export_scores_as_arlm_and_exports_back_the_same(kind, tmp_path):
    vocab = _vocab(kind)
    lm = LM(_gpt(vocab), vocab, "file")
    export_hf(lm, tmp_path / "hf")
    back = import_hf(tmp_path / "hf", tmp_path / "back")
    for text in ["To be, or not to be", "é ☃", ""]:
        assert back.log_prob(text) == pytest.approx(lm.log_prob(text), abs=1e-4)
    export_hf(LM.load(tmp_path / "back"), tmp_path / "again")
    a, b = load_file(str(tmp_path / "hf" / "model.safetensors")), load_file(str(tmp_path / "again" / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    t1 = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    t2 = transformers.AutoTokenizer.from_pretrained(tmp_path / "again")
    assert t1("To be, or not to be").input_ids == t2("To be, or not to be").input_ids
    assert t2.eos_token == t1.eos_token == "<|endoftext|>"


def _gpt2_tokenizer(directory):
    """A GPT-2-style byte-level BPE (one <|endoftext|> for start and end) trained here, saved by transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=350, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT[:30_000]], trainer=trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                                eos_token="<|endoftext|>")
    fast.save_pretrained(directory)
    return fast


@pytest.mark.parametrize("tied", [True, False])
def test_import_gpt2_checkpoint_scores_as_transformers_and_round_trips(tied, tmp_path):
    tok = _gpt2_tokenizer(tmp_path / "gpt2")
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    cfg = transformers.GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                  bos_token_id=eot, eos_token_id=eot, tie_word_embeddings=tied)
    torch.manual_seed(3)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    hf.save_pretrained(tmp_path / "gpt2")
    if tied:
        r = subprocess.run([sys.executable, "-m", "arlm", "import", str(tmp_path / "gpt2"), "--out", str(tmp_path / "m")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    else:
        import_hf(tmp_path / "gpt2", tmp_path / "m")
    lm = LM.load(tmp_path / "m")
    assert lm.vocab.eos_id == eot and lm.vocab.bos_id == len(tok)
    for text in ["To be, or not to be", "ROMEO:\nO, she doth teach the torches", "é ☃ zzz", ""]:
        ids = [eot, *tok(text).input_ids, eot]
        assert lm.vocab.encode(text) == ids[1:-1]
        with torch.no_grad():
            log_probs = torch.log_softmax(hf(torch.tensor([ids])).logits[0].double(), -1)  # [T, V]
        expected = log_probs[:-1].gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
        assert lm.log_prob(text) == pytest.approx(expected, abs=1e-4), text
    # export o import = identity on weights (and the tokenizer gives the same ids)
    export_hf(lm, tmp_path / "again")
    a = load_file(str(tmp_path / "gpt2" / "model.safetensors"))
    b = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    tok2 = transformers.AutoTokenizer.from_pretrained(tmp_path / "again")
    assert tok2("To be, or not to be").input_ids == tok("To be, or not to be").input_ids
    assert tok2.eos_token == "<|endoftext|>"


def test_refusals_are_one_line(tmp_path, capsys):
    from arlm.cli import main

    vocab = CharVocab.train(names_docs(300))
    LM(make_ngram(vocab, names_docs(300), 3), vocab, "lines").save(tmp_path / "ng")
    capsys.readouterr()
    assert main(["export", str(tmp_path / "ng"), "--format", "hf", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ngram has --format arpa" in err, err
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ArlmError, match="imports only GPT-2-architecture"):
        import_hf(tmp_path / "llama")
    (tmp_path / "act").mkdir()
    (tmp_path / "act" / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                                                              "activation_function": "relu"}))
    with pytest.raises(ArlmError, match="activation_function='relu'"):
        import_hf(tmp_path / "act")


def test_other_position_schemes_are_refused():
    from arlm.models.gpt import GPTConfig

    with pytest.raises(ArlmError, match="learned position embeddings.*rotary"):
        _check_positions(GPTConfig(vocab_size=10, bos_id=0, eos_id=1, pos_emb="rotary"))
    _check_positions(GPTConfig(vocab_size=10, bos_id=0, eos_id=1))


def test_relu2_untied_zero_init_export_runs_in_transformers_and_round_trips(tmp_path):
    """The modded-nanoGPT options GPT-2 can express (ReLU² as transformers' "relu2", an untied head, zero-initialised
    projections: only an initialisation) export: transformers' scores equal arlm's, and the import is the same model."""
    vocab = _vocab("bpe")
    lm = LM(_gpt(vocab, mlp_act="relu2", tie_word_embeddings=False, zero_init=True), vocab, "file")
    export_hf(lm, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.activation_function == "relu2" and not hf.config.tie_word_embeddings
    ids = encode_document(vocab, PROBE[:200])
    keep = [i for i in range(vocab.vocab_size) if i != vocab.bos_id]
    with torch.no_grad():
        theirs = torch.log_softmax(hf(torch.tensor([_hf_ids(vocab, ids[:-1])])).logits[0].double(), -1)
        ours = torch.log_softmax(lm.model.logits(torch.tensor([ids[:-1]]))[0].double(), -1)
    assert (theirs - ours[:, keep]).abs().max().item() <= 1e-5
    back = import_hf(tmp_path / "hf")
    assert back.model.config.mlp_act == "relu2"
    assert back.log_prob(PROBE[:100]) == pytest.approx(lm.log_prob(PROBE[:100]), abs=1e-4)


@pytest.mark.parametrize("option", [dict(qk_norm=True), dict(logit_softcap=30.0), dict(value_residual=True),
                                    dict(unet_skips=True)])
def test_options_without_a_gpt2_equivalent_are_refused(option, tmp_path, capsys):
    from arlm.cli import main

    vocab = CharVocab.train(names_docs(100))
    LM(_gpt(vocab, **option), vocab, "lines").save(tmp_path / "m")
    capsys.readouterr()
    assert main(["export", str(tmp_path / "m"), "--format", "hf", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    name = next(iter(option))
    assert err.count("\n") == 1 and f"{name}=" in err and "GPT2LMHeadModel cannot run" in err, err
    assert not (tmp_path / "x").exists()
