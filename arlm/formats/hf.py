"""Hugging Face ``transformers`` checkpoints: export arlm's GPT as ``GPT2LMHeadModel``, import GPT-2 checkpoints.

arlm's GPT is GPT-2's architecture (Radford et al. 2019; :mod:`arlm.models.gpt`),
so a conversion is a renaming of parameters plus a transpose of the four
matrices that GPT-2 keeps in its ``Conv1D`` layout ``[in, out]`` (arlm's
``nn.Linear`` keeps ``[out, in]``): the table :data:`GPT2_NAMES` below, as in
Hugging Face's own conversion scripts. Nothing here needs ``transformers``
installed: the files are written and read with ``safetensors``, ``tokenizers``
and JSON.

**Export** (``arlm export DIR --format hf --out HFDIR``) writes
``model.safetensors``, ``config.json`` (``GPT2LMHeadModel``, ``gelu_new`` =
the tanh GELU arlm uses), ``generation_config.json``, ``tokenizer.json`` (built
with ``tokenizers``: char vocab = one token per character, byte vocab = GPT-2's
byte alphabet with no merges, BPE = arlm's own tokenizer) and its config. A
model without biases gets zero biases (GPT-2 always has them).

The export is exact: transformers' ``log_softmax(logits)`` is arlm's
``log_probs`` for every token, and no token gets probability that arlm never
gives. arlm has two specials, ``<bos>`` (only ever an input, its output column
-inf) and ``<eos>`` (an output; never an input, since scoring and sampling stop
at it); ``GPT2LMHeadModel`` has no output bias, so it cannot put -inf on a
column, and a ``<bos>`` column would take probability mass. So the export
follows GPT-2's own convention, one token ``<|endoftext|>`` that starts and
ends every text: ``<bos>``'s id is dropped (the ids above it move down by one),
``<eos>`` becomes ``<|endoftext|>``, whose *input* embedding (``wte`` row) is
``<bos>``'s and whose *output* row (``lm_head``) is ``<eos>``'s. The two rows
differ, so the head is written untied even when arlm's is tied. Every arlm
input sequence ``[<bos>, x_1 … x_n]`` is then ``[<|endoftext|>, x_1 … x_n]``
with the same embeddings, and the output vocabulary is arlm's minus the one
token it never emits, with the same logits. (A stream with several documents,
GPT-2-style ``a <|endoftext|> b``, reads the separator as ``<bos>`` without
the ``<eos>`` before it; arlm scores documents one at a time.) The tokenizer's
post-processor puts ``<|endoftext|>`` first, so ``tokenizer(text).input_ids``
is what arlm feeds its model, in the exported ids; ``split_special_tokens``
is on, so literal special-token text is ordinary text, as in arlm. A char
vocab's tokenizer maps a character outside the vocab to ``<unk>``, whose id is
one past the model's vocab: the model refuses it (an index error) instead of
scoring another character, and has no row, so no probability, for it.

**Import** (``arlm import HFDIR --out DIR``) reads a GPT-2-architecture
checkpoint (``model.safetensors``, sharded or not, or ``pytorch_model.bin``
read with ``weights_only=True``) and its byte-level BPE tokenizer
(``tokenizer.json``, or GPT-2's ``vocab.json`` + ``merges.txt``). GPT-2 uses
one token, ``<|endoftext|>``, both to start and to end a text, but arlm needs
two (``<bos>`` is never predicted, ``<eos>`` is). So:

* arlm's ``<eos>`` *is* the checkpoint's end token (same id, renamed ``<eos>``
  in the tokenizer), so p(<eos> | x) is GPT-2's p(<|endoftext|> | x);
* arlm's ``<bos>`` is one new id, ``V`` (the checkpoint's vocab size), whose
  embedding is a copy of the start token's (``bos_token_id``, i.e.
  ``<|endoftext|>``), so conditioning on ``<bos>`` is conditioning on
  ``<|endoftext|>`` exactly as GPT-2 does.

``log_prob(x)`` is therefore GPT-2's log p(x_1 … x_n, <|endoftext|> |
<|endoftext|>) over the canonical BPE tokens of x, and the next-token
distributions are GPT-2's own (the extra ``<bos>`` column is -inf).
Exporting an imported model drops the extra row and restores the original
names: export ∘ import is the identity on weights and tokenizer. Importing an
exported byte or BPE model gives the same probabilities as the arlm model
(ids renumbered); a char export's tokenizer is not a byte-level BPE, so
``arlm import`` refuses it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ArlmError
from ..io import atomic_path, atomic_write_text
from ..vocab.base import BOS, EOS

#: arlm GPT parameter -> GPT2LMHeadModel parameter, and whether it is a Conv1D matrix (transposed).
#: ``{i}`` is the layer index. ``lm_head.weight`` is written only for an untied head.
GPT2_NAMES: list[tuple[str, str, bool]] = [
    ("wte.weight", "transformer.wte.weight", False),
    ("wpe.weight", "transformer.wpe.weight", False),
    ("h.{i}.ln_1.weight", "transformer.h.{i}.ln_1.weight", False),
    ("h.{i}.ln_1.bias", "transformer.h.{i}.ln_1.bias", False),
    ("h.{i}.attn.c_attn.weight", "transformer.h.{i}.attn.c_attn.weight", True),
    ("h.{i}.attn.c_attn.bias", "transformer.h.{i}.attn.c_attn.bias", False),
    ("h.{i}.attn.c_proj.weight", "transformer.h.{i}.attn.c_proj.weight", True),
    ("h.{i}.attn.c_proj.bias", "transformer.h.{i}.attn.c_proj.bias", False),
    ("h.{i}.ln_2.weight", "transformer.h.{i}.ln_2.weight", False),
    ("h.{i}.ln_2.bias", "transformer.h.{i}.ln_2.bias", False),
    ("h.{i}.mlp.c_fc.weight", "transformer.h.{i}.mlp.c_fc.weight", True),
    ("h.{i}.mlp.c_fc.bias", "transformer.h.{i}.mlp.c_fc.bias", False),
    ("h.{i}.mlp.c_proj.weight", "transformer.h.{i}.mlp.c_proj.weight", True),
    ("h.{i}.mlp.c_proj.bias", "transformer.h.{i}.mlp.c_proj.bias", False),
    ("ln_f.weight", "transformer.ln_f.weight", False),
    ("ln_f.bias", "transformer.ln_f.bias", False),
    ("lm_head.weight", "lm_head.weight", False),
]
#: GPT-2 config fields arlm reproduces, and the values it accepts on import.
GPT2_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "relu2")
#: the families and the formats they export to (for the one-line refusal)
EXPORT_FORMATS = {"gpt": "hf", "ngram": "arpa", "backoff": "arpa"}
#: the exported token that is arlm's input ``<bos>`` and output ``<eos>`` at once (GPT-2's name)
ENDOFTEXT = "<|endoftext|>"
#: a char export's unknown character: an id one past the model's vocab, so the model refuses it (never emitted)
UNK = "<unk>"
HF_META = "hf_import"  # config.json key of an imported model: what export needs to restore the original


def weight_names(n_layer: int) -> list[tuple[str, str, bool]]:
    rows = []
    for ours, theirs, transpose in GPT2_NAMES:
        if "{i}" in ours:
            rows += [(ours.format(i=i), theirs.format(i=i), transpose) for i in range(n_layer)]
        else:
            rows.append((ours, theirs, transpose))
    return rows


def refuse_family(family: str, fmt: str) -> ArlmError:
    supported = ", ".join(f"{f} -> --format {x}" for f, x in EXPORT_FORMATS.items())
    return ArlmError(f"a {family} model cannot be exported as {fmt}: {family} has "
                     f"{'no other format' if family not in EXPORT_FORMATS else '--format ' + EXPORT_FORMATS[family]} "
                     f"(supported: {supported})")


#: GPTConfig options GPT2LMHeadModel has no equivalent of: (field, value that GPT-2 has)
_NOT_GPT2 = (("qk_norm", False), ("logit_softcap", 0.0), ("value_residual", False), ("unet_skips", False))
#: GPTConfig.mlp_act -> the GPT-2 config's activation_function (transformers' ACT2FN names)
HF_ACTIVATIONS = {"gelu": "gelu_new", "relu2": "relu2"}


def _check_positions(config) -> None:
    """GPT-2 has learned absolute positions and none of the options of ``_NOT_GPT2``: refuse a model with
    another scheme (``GPTConfig.pos_emb``, e.g. rotary) or one of those options (ArlmError, one line)."""
    pos_emb = getattr(config, "pos_emb", "learned")
    if pos_emb != "learned":
        raise ArlmError(f"--format hf exports GPT-2's learned position embeddings only; this model has "
                        f"pos_emb={pos_emb!r}, which GPT2LMHeadModel cannot run (arlm itself scores and samples it)")
    other = [f"{name}={getattr(config, name)!r}" for name, gpt2 in _NOT_GPT2 if getattr(config, name, gpt2) != gpt2]
    if other:
        raise ArlmError(f"--format hf exports GPT-2's architecture only; this model has {', '.join(other)}, which "
                        "GPT2LMHeadModel cannot run (arlm itself scores and samples it)")


# -- tokenizers ---------------------------------------------------------------------------------
def _byte_alphabet() -> dict[int, str]:
    from ..vocab.bpe import bytes_to_unicode

    return bytes_to_unicode()


def _hf_id(i: int, bos_id: int) -> int:
    """The exported id of arlm's token ``i`` (any but ``<bos>``): the ids above ``<bos>`` move down by one."""
    return i - (i > bos_id)


def _native_tokenizer(vocab):
    """A ``tokenizers.Tokenizer`` for a char, byte or BPE vocab in the exported ids, ``<|endoftext|>`` first.

    ``<bos>`` is gone; ``<eos>`` is renamed ``ENDOFTEXT`` and keeps its place
    (:func:`_hf_id`). A char vocab's unknown characters become ``UNK``, an id
    past the model's vocab (see :data:`UNK`).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    b = vocab.bos_id
    eot = _hf_id(vocab.eos_id, b)
    if vocab.kind == "bpe":
        spec = json.loads(vocab.to_json())
        table = spec["model"]["vocab"]
        table.pop(BOS, None)
        table.pop(EOS, None)
        spec["model"]["vocab"] = {t: _hf_id(i, b) for t, i in table.items()}
        spec["model"]["vocab"][ENDOFTEXT] = eot
        spec["added_tokens"] = [dict(t, id=_hf_id(t["id"], b), content=ENDOFTEXT if t["content"] == EOS else t["content"])
                                for t in spec.get("added_tokens", []) if t["content"] != BOS]
        spec["post_processor"] = None
        tok = Tokenizer.from_str(json.dumps(spec))
    elif vocab.kind == "char":
        table = {c: _hf_id(i, b) for i, c in enumerate(vocab.chars)}
        table.update({ENDOFTEXT: eot, UNK: vocab.vocab_size - 1})
        tok = Tokenizer(models.WordLevel(table, unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one piece per character
        tok.decoder = decoders.Fuse()
    elif vocab.kind == "byte":
        alphabet = _byte_alphabet()
        table = {alphabet[x]: _hf_id(x, b) for x in range(256)}
        table[ENDOFTEXT] = eot
        tok = Tokenizer(models.BPE(table, []))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
    else:
        raise ArlmError(f"--format hf supports char, byte and bpe vocabularies, not {vocab.kind!r}")
    if vocab.kind != "bpe":
        tok.add_special_tokens([AddedToken(ENDOFTEXT, special=True, normalized=False)])
    if vocab.kind == "char":
        tok.add_special_tokens([AddedToken(UNK, special=True, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(single=f"{ENDOFTEXT} $A", pair=f"{ENDOFTEXT} $A $B",
                                                       special_tokens=[(ENDOFTEXT, eot)])
    if tok.token_to_id(ENDOFTEXT) != eot or tok.token_to_id(BOS) is not None or tok.token_to_id(EOS) is not None:
        raise ArlmError("internal error: the tokenizer's special ids differ from the exported model's")
    return tok


def rename_token(spec: dict, old: str, new: str) -> None:
    for t in spec.get("added_tokens", []):
        if t["content"] == old:
            t["content"] = new
    vocab = spec.get("model", {}).get("vocab")
    if isinstance(vocab, dict) and old in vocab:
        vocab[new] = vocab.pop(old)


# -- export -------------------------------------------------------------------------------------
def _hf_tensors(sd: dict, n_layer: int, tied: bool, rows: list[int], wte_rows: list[int]) -> dict:
    """arlm's GPT state dict -> GPT2LMHeadModel's tensors (Conv1D weights transposed; the head's rows ``rows``
    and the embedding's rows ``wte_rows`` of arlm's vocab, in the exported vocab's order)."""
    tensors = {}
    for ours, theirs, transpose in weight_names(n_layer):
        if ours == "lm_head.weight" and tied:
            continue
        if ours == "lm_head.weight" and "lm_head.weight" not in sd:  # tied in arlm, untied in the export
            t = sd["wte.weight"]
        elif ours in sd:
            t = sd[ours]
        elif ours.endswith(".bias"):  # bias=False: GPT-2 always has biases, zeros are the same function
            w = sd[ours[: -len("bias")] + "weight"]
            t = torch.zeros(w.shape[0], dtype=w.dtype)
        else:
            raise ArlmError(f"this GPT lacks the parameter {ours}; --format hf cannot map it")
        if ours in ("wte.weight", "lm_head.weight"):
            t = t[wte_rows if ours == "wte.weight" else rows]
        tensors[theirs] = (t.t() if transpose else t).detach().cpu().contiguous().clone()
    return tensors


def _hf_config(cfg, vocab_size: int, bos_id: int, eos_id: int, tied: bool, dtype: str) -> dict:
    """The ``config.json`` of a GPT2LMHeadModel with ``cfg``'s sizes."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": vocab_size,
        "n_positions": cfg.block_size,
        "n_ctx": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": None,
        "activation_function": HF_ACTIVATIONS[getattr(cfg, "mlp_act", "gelu")],
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "tie_word_embeddings": tied,
        "torch_dtype": dtype,
    }


def export_hf(lm, out: str | Path) -> dict:
    """Write ``lm`` (a GPT) as a Hugging Face ``GPT2LMHeadModel`` directory (see the module docstring).

    Returns:
        ``{"path", "vocab_size", "n_layer", "tied"}``.

    Raises:
        ArlmError: not a GPT, a position scheme other than GPT-2's, a word vocab,
            or ``out`` cannot be written.
    """
    from safetensors.torch import save_file
    from tokenizers import Tokenizer

    from ..checkpoint import prepare_dir, refuse_model_files

    model, vocab = lm.model, lm.vocab
    if model.family != "gpt":
        raise refuse_family(model.family, "hf")
    cfg = model.config
    _check_positions(cfg)
    sd = model.state_dict()
    if "wpe.weight" not in sd:
        raise ArlmError("--format hf needs GPT-2's learned position embeddings (wpe); this model has none")
    tied = model.lm_head.weight is model.wte.weight
    meta = (lm.info or {}).get(HF_META)
    refuse_model_files(out, "--out")
    out = prepare_dir(out)

    if meta:  # imported from Hugging Face: drop the <bos> row arlm added, restore the names
        vocab_size, bos_id, eos_id = meta["vocab_size"], meta["bos_token_id"], meta["eos_token_id"]
        spec = json.loads(vocab.to_json())
        spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < meta["tokenizer_size"]]
        rename_token(spec, EOS, meta["eos_token"])
        tokenizer = Tokenizer.from_str(json.dumps(spec))
        specials = {"bos_token": meta["bos_token"], "eos_token": meta["eos_token"]}
        rows = wte_rows = list(range(vocab_size))
    else:  # one token for <bos> (input) and <eos> (output): see the module docstring
        tokenizer = _native_tokenizer(vocab)
        specials = {"bos_token": ENDOFTEXT, "eos_token": ENDOFTEXT}
        if vocab.kind == "char":
            specials["unk_token"] = UNK
        vocab_size, bos_id = cfg.vocab_size - 1, _hf_id(cfg.eos_id, cfg.bos_id)
        eos_id = bos_id
        rows = [i for i in range(cfg.vocab_size) if i != cfg.bos_id]  # output rows: every token but <bos>
        wte_rows = [cfg.bos_id if i == cfg.eos_id else i for i in rows]  # input rows: <|endoftext|> reads as <bos>
        tied = False

    tensors = _hf_tensors(sd, cfg.n_layer, tied, rows, wte_rows)
    dtype = str(sd["wte.weight"].dtype).replace("torch.", "")
    hf_config = _hf_config(cfg, vocab_size, bos_id, eos_id, tied, dtype)
    generation = {"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": eos_id}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "model_max_length": cfg.block_size,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": not meta,
    }
    try:
        with atomic_path(out / "model.safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
        atomic_write_text(out / "tokenizer.json", tokenizer.to_str(pretty=True))
        atomic_write_text(out / "tokenizer_config.json", json.dumps(tokenizer_config, indent=2) + "\n")
        atomic_write_text(out / "special_tokens_map.json", json.dumps(specials, indent=2) + "\n")
        atomic_write_text(out / "generation_config.json", json.dumps(generation, indent=2) + "\n")
        atomic_write_text(out / "config.json", json.dumps(hf_config, indent=2) + "\n")
    except OSError as e:
        raise ArlmError(f"cannot write {out}: {e.strerror or e}") from None
    return {"path": str(out), "vocab_size": vocab_size, "n_layer": cfg.n_layer, "tied": tied}


# -- import (hf_import.py) ---------------------------------------------------------------------
def import_hf(directory: str | Path, out: str | Path | None = None):
    """Read a GPT-2-architecture Hugging Face checkpoint directory into an :class:`arlm.lm.LM`.

    See the module docstring for how ``<bos>``/``<eos>`` map onto the
    checkpoint's special tokens. With ``out`` the model directory is written there.

    Raises:
        ArlmError: not a directory, not ``GPT2LMHeadModel`` (or a variant arlm
            cannot run: another activation, MLP width or attention scaling),
            missing or unreadable weights or tokenizer, or a tokenizer that is
            not a byte-level BPE.
    """
    from .hf_import import read_hf_checkpoint

    return read_hf_checkpoint(directory, out)
