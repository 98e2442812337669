"""Reading a GPT-2-architecture Hugging Face checkpoint into arlm's GPT: :func:`arlm.formats.hf.import_hf`.

Weights are renamed (and Conv1D weights transposed) by ``hf.weight_names``; the tokenizer gets arlm's
``<eos>`` and a new ``<bos>`` row (see ``hf.py``'s module docstring).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from ..errors import ArlmError
from ..vocab.base import BOS, EOS
from .hf import GPT2_ACTIVATIONS, HF_META, weight_names, rename_token

def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArlmError(f"cannot read {path}: {e}") from None


def _load_state_dict(d: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    def load_one(p: Path) -> dict[str, torch.Tensor]:
        try:
            if p.suffix == ".safetensors":
                return load_file(str(p))
            return torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - truncated or foreign files raise many types
            raise ArlmError(f"cannot read the weights {p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

    for name in ("model.safetensors", "pytorch_model.bin"):
        if (d / name).is_file():
            return load_one(d / name)
        index = d / f"{name}.index.json"
        if index.is_file():
            sd: dict[str, torch.Tensor] = {}
            for shard in sorted(set(_read_json(index).get("weight_map", {}).values())):
                sd.update(load_one(d / shard))
            return sd
    raise ArlmError(f"no weights in {d}: expected model.safetensors (or its index) or pytorch_model.bin")


def _load_tokenizer_spec(d: Path) -> dict:
    if (d / "tokenizer.json").is_file():
        return _read_json(d / "tokenizer.json")
    if (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        try:
            tok = Tokenizer(models.BPE.from_file(str(d / "vocab.json"), str(d / "merges.txt")))
        except Exception as e:  # noqa: BLE001
            raise ArlmError(f"cannot read the tokenizer in {d}: {e}") from None
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return json.loads(tok.to_str())
    raise ArlmError(f"no tokenizer in {d}: expected tokenizer.json, or vocab.json and merges.txt")


def _read_hf_config(d: Path) -> dict:
    """The ``config.json`` of a GPT-2-architecture checkpoint. Raises ArlmError for anything else."""
    if not d.is_dir():
        raise ArlmError(f"no Hugging Face model directory at {d}")
    if not (d / "config.json").is_file():
        raise ArlmError(f"{d} has no config.json: not a Hugging Face model directory")
    hc = _read_json(d / "config.json")
    arch = (hc.get("architectures") or [hc.get("model_type", "?")])[0]
    if hc.get("model_type") != "gpt2" or arch not in ("GPT2LMHeadModel", "GPT2Model"):
        raise ArlmError(f"{d} holds a {arch} ({hc.get('model_type')}) model; arlm imports only GPT-2-architecture "
                        f"checkpoints (GPT2LMHeadModel)")
    n_embd = hc.get("n_embd", 768)
    unsupported = []
    if hc.get("activation_function", "gelu_new") not in GPT2_ACTIVATIONS:
        unsupported.append(f"activation_function={hc.get('activation_function')!r}")
    if hc.get("n_inner") not in (None, 4 * n_embd):
        unsupported.append(f"n_inner={hc.get('n_inner')} (arlm's MLP is 4 x n_embd)")
    if not hc.get("scale_attn_weights", True) or hc.get("scale_attn_by_inverse_layer_idx", False):
        unsupported.append("non-standard attention scaling")
    if hc.get("add_cross_attention", False):
        unsupported.append("cross-attention")
    if unsupported:
        raise ArlmError(f"{d}: this GPT-2 variant has {', '.join(unsupported)}, which arlm's GPT cannot run")
    return hc


def _hf_weights(d: Path, n_layer: int, tied: bool, V: int, n_embd: int) -> dict:
    """The checkpoint's tensors under arlm's GPT names (float32; Conv1D weights transposed)."""
    raw = _load_state_dict(d)
    sd = {(k[len("transformer."):] if k.startswith("transformer.") else k): v for k, v in raw.items()}
    weights = {}
    for ours, theirs, transpose in weight_names(n_layer):
        key = theirs[len("transformer."):] if theirs.startswith("transformer.") else theirs
        if ours == "lm_head.weight" and tied:
            continue
        if key not in sd:
            raise ArlmError(f"{d}: the weights lack {theirs}")
        t = sd[key].float()
        weights[ours] = t.t().contiguous() if transpose else t
    if weights["wte.weight"].shape != (V, n_embd):
        raise ArlmError(f"{d}: wte has shape {tuple(weights['wte.weight'].shape)}, config says ({V}, {n_embd})")

    return weights


def _hf_vocab(d: Path, hc: dict, V: int):
    """The checkpoint's tokenizer as a BPEVocab with arlm's ``<eos>`` (the end-of-text token) and a new ``<bos>``
    (id V): ``(vocab, tokenizer size, eos_id, start_id, eos name, start name)``."""
    from tokenizers import Tokenizer

    from ..vocab.bpe import BPEVocab

    spec = _load_tokenizer_spec(d)
    try:
        probe = Tokenizer.from_str(json.dumps(spec))
    except Exception as e:  # noqa: BLE001
        raise ArlmError(f"cannot read the tokenizer in {d}: {e}") from None
    size = probe.get_vocab_size(with_added_tokens=True)
    eos_id = hc.get("eos_token_id")
    if eos_id is None:
        eos_id = probe.token_to_id("<|endoftext|>")
    if eos_id is None or not 0 <= eos_id < min(size, V):
        raise ArlmError(f"{d}: config.json names no end-of-text token (eos_token_id) that the tokenizer has")
    start_id = hc.get("bos_token_id", eos_id)
    start_id = eos_id if start_id is None else start_id
    eos_name, start_name = probe.id_to_token(eos_id), probe.id_to_token(start_id)
    if size > V:
        raise ArlmError(f"{d}: the tokenizer has {size} tokens but the model only {V}")
    rename_token(spec, eos_name, EOS)
    added = spec.setdefault("added_tokens", [])
    if not any(t["id"] == eos_id for t in added):
        added.append({"id": eos_id, "content": EOS, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True})
    for t in added:
        if t["id"] == eos_id:
            t["special"] = True
    for i in range(size, V):  # rows of a padded embedding that no text produces: keep them as tokens
        added.append({"id": i, "content": f"<unused {i}>", "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True})
    added.append({"id": V, "content": BOS, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": True})
    try:
        vocab = BPEVocab(Tokenizer.from_str(json.dumps(spec)))
    except ArlmError as e:
        raise ArlmError(f"{d}: {e}") from None
    if (vocab.bos_id, vocab.eos_id, vocab.vocab_size) != (V, eos_id, V + 1):
        raise ArlmError(f"{d}: could not give the tokenizer arlm's <bos>/<eos> (got ids {vocab.bos_id}, {vocab.eos_id})")

    return vocab, size, eos_id, start_id, eos_name, start_name


def read_hf_checkpoint(directory: str | Path, out: str | Path | None = None):
    """:func:`arlm.formats.hf.import_hf` (see there)."""
    from ..lm import LM
    from ..models.gpt import GPTConfig, GPTModel

    d = Path(directory)
    hc = _read_hf_config(d)
    n_embd, n_layer, n_head = hc.get("n_embd", 768), hc.get("n_layer", 12), hc.get("n_head", 12)
    V = int(hc["vocab_size"])
    tied = bool(hc.get("tie_word_embeddings", True))

    weights = _hf_weights(d, n_layer, tied, V, n_embd)

    vocab, size, eos_id, start_id, eos_name, start_name = _hf_vocab(d, hc, V)

    # -- the model: one more embedding row for <bos>, a copy of the start token's
    weights["wte.weight"] = torch.cat([weights["wte.weight"], weights["wte.weight"][start_id : start_id + 1]])
    if not tied:
        weights["lm_head.weight"] = torch.cat([weights["lm_head.weight"], weights["lm_head.weight"][eos_id : eos_id + 1]])
    config = GPTConfig(vocab_size=V + 1, bos_id=V, eos_id=eos_id, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                       block_size=int(hc.get("n_positions", hc.get("n_ctx", 1024))), dropout=0.0, bias=True,
                       layer_norm_epsilon=float(hc.get("layer_norm_epsilon", 1e-5)),
                       mlp_act="relu2" if hc.get("activation_function") == "relu2" else "gelu")
    if not tied:
        config = dataclasses.replace(config, tie_word_embeddings=False)
    with torch.device("meta"):
        model = GPTModel(config)
    model = model.to_empty(device="cpu")
    if tied:
        model.lm_head.weight = model.wte.weight
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise ArlmError(f"{d}: weights do not fit arlm's GPT (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval()
    lm = LM(model, vocab, "file")
    meta = {"vocab_size": V, "tokenizer_size": size, "bos_token_id": start_id, "eos_token_id": eos_id,
            "bos_token": start_name, "eos_token": eos_name, "path": str(d)}
    lm.info = {HF_META: meta}
    if out is not None:
        lm.save(out, {HF_META: meta})
    return lm
