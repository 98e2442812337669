"""Linear interpolation of language models that share a vocabulary.

    p(w | h) = Σ_k λ_k(h) p_k(w | h),    λ_k(h) ≥ 0,  Σ_k λ_k(h) = 1

The weights are fitted by expectation-maximisation on held-out text (Jelinek &
Mercer 1980, "Interpolated estimation of Markov source parameters from sparse
data"; Dempster, Laird & Rubin 1977): each EM iteration never lowers the
held-out likelihood. A bucketed mixture lets the weights depend on the
context through a bucket computed by its n-gram and cache components: for
each, the order of the longest history it has seen (in training, or in the
document so far) crossed with a log-count bin of that history (Jelinek &
Mercer's bucketed λ). Since each λ(h) is a probability vector and each p_k(·|h) a distribution,
the mixture is a proper distribution over the vocabulary, ``<bos>`` at 0.

A saved mixture directory stores the weights, float64[buckets, K], in
``model.safetensors``, and finds its components through
``config.component_paths``, relative to itself: a component that was loaded
from a directory is referenced there (``../ngram5-char``), using no disk, so
the mixture and its components move together; a component built in memory,
or every component when ``embed_components`` is set (``arlm mix --embed``), is
copied in as ``component0/``, ``component1/``, … (each a complete model
directory).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ArlmError
from ..paths import CONFIG_FILE, WEIGHTS_FILE
from .base import LanguageModel


@dataclasses.dataclass
class MixtureConfig:
    """``components``: the component families (for reading); ``bucket_components``: the
    indices of the n-gram and cache components whose context features select the
    weights (empty: one set of weights for every context)."""

    vocab_size: int
    bos_id: int
    eos_id: int
    components: list[str] = dataclasses.field(default_factory=list)
    bucket_components: list[int] = dataclasses.field(default_factory=list)
    #: each component's directory relative to the mixture's (empty: ``component0``, ``component1``, … inside it)
    component_paths: list[str] = dataclasses.field(default_factory=list)


class MixtureModel(LanguageModel):
    """A mixture of component models (see the module docstring).

    ``logits`` returns log Σ_k λ_k softmax(logits_k) (float64); ``step`` keeps
    one state per component. Long texts are scored component by component, each
    with its own window or state, and the per-token probabilities mixed.
    """

    family = "mixture"

    def __init__(self, config: MixtureConfig, components: list[LanguageModel], weights: torch.Tensor | None = None):
        super().__init__()
        if not components:
            raise ArlmError("a mixture needs at least one component")
        for c in components:
            if c.vocab_size != config.vocab_size or c.bos_id != config.bos_id or c.eos_id != config.eos_id:
                raise ArlmError("mixture components must share one vocabulary")
        self.config = config
        self.components = torch.nn.ModuleList(components)
        K = len(components)
        n_buckets = self.n_buckets
        if weights is None:
            weights = torch.full((n_buckets, K), 1.0 / K, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64).reshape(n_buckets, K)
        if (weights < 0).any() or not torch.allclose(weights.sum(-1), torch.ones(n_buckets, dtype=torch.float64), atol=1e-9):
            raise ArlmError("mixture weights must be non-negative and sum to 1 in every bucket")
        self.register_buffer("weights", weights)  # float64[buckets, K]
        self.embed_components = False  # True: save copies every component into the mixture directory

    @property
    def n_buckets(self) -> int:
        n = 1
        for k in self.config.bucket_components:
            n *= self.components[k].feature_size
        return n

    @property
    def block_size(self) -> int | None:
        """None: each component keeps its own window or state, so the mixture takes any length."""
        return None

    @property
    def device(self) -> torch.device:
        for c in self.components:
            if c.family != "ngram":
                return c.device
        return torch.device("cpu")

    # -- buckets --------------------------------------------------------------------
    def _combine(self, features: list[np.ndarray], shape) -> np.ndarray:
        bucket = np.zeros(shape, dtype=np.int64)
        for k, f in zip(self.config.bucket_components, features):
            bucket = bucket * self.components[k].feature_size + f
        return bucket

    def buckets(self, ids: np.ndarray, starts: np.ndarray | None = None) -> np.ndarray:
        """Bucket of each position's history, int64[B, T] (all 0 when not bucketed)."""
        feats = [self.components[k].sequence_features(ids, starts) for k in self.config.bucket_components]
        return self._combine(feats, ids.shape)

    def _log_weights(self, buckets: np.ndarray) -> torch.Tensor:
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(self.weights.numpy()[buckets]))  # [..., K]

    # -- the contract -----------------------------------------------------------------
    def logits(self, token_ids: torch.Tensor) -> torch.Tensor:
        """log Σ_k λ_k(h) p_k(· | h): LongTensor[B, T] -> DoubleTensor[B, T, V].

        A windowed component sees its last ``block_size`` tokens at every
        position (as in ``step``); see ``LanguageModel.dense_log_probs``.
        """
        parts = [c.dense_log_probs(token_ids.to(c.device)) for c in self.components]  # each [B, T, V]
        stacked = torch.stack(parts, dim=-1)  # [B, T, V, K]
        lw = self._log_weights(self.buckets(token_ids.cpu().numpy()))  # [B, T, K]
        return torch.logsumexp(stacked + lw[:, :, None, :], dim=-1)  # [B, T, V]

    def _mix_last(self, outs: list[torch.Tensor], states: list) -> torch.Tensor:
        lps = torch.stack([torch.log_softmax(o.double(), -1).cpu() for o in outs], dim=-1)  # [B, V, K]
        feats = [self.components[k].state_features(states[k]) for k in self.config.bucket_components]
        lw = self._log_weights(self._combine(feats, (lps.shape[0],)))  # [B, K]
        return torch.logsumexp(lps + lw[:, None, :], dim=-1)  # [B, V]

    def step(self, token_ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """One token per row: (DoubleTensor[B, V] mixed log-probs, list of component states)."""
        states = state if state is not None else [None] * len(self.components)
        outs, new_states = [], []
        for c, s in zip(self.components, states):
            o, s2 = c.step(token_ids.to(c.device), s)
            outs.append(o)
            new_states.append(s2)
        return self._mix_last(outs, new_states), new_states

    def prefill(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        outs, states = [], []
        for c in self.components:
            o, s = c.prefill(token_ids.to(c.device))
            outs.append(o)
            states.append(s)
        return self._mix_last(outs, states), states

    # -- scoring: each component with its own window/state, then mixed ------------------
    def component_log_probs(self, documents: list[torch.Tensor]) -> tuple[torch.Tensor, np.ndarray, list[int]]:
        """Per-component target log-probs of many sequences, concatenated.

        Returns ``(L, buckets, lengths)``: L is float64[K, N] (N = Σ (T_i - 1)),
        buckets int64[N], lengths the per-document counts.
        """
        per = []
        for c in self.components:
            lps = c.documents_log_probs(documents) if len(documents) > 1 else [c.sequence_log_probs(documents[0])]
            per.append(torch.cat([lp.double().cpu() for lp in lps]))
        lengths = [max(len(d) - 1, 0) for d in documents]
        docs = [d.cpu().numpy().astype(np.int64) for d in documents if len(d) > 1]
        if docs:
            inputs = np.concatenate([d[:-1] for d in docs])
            starts = np.zeros(len(inputs), dtype=bool)
            lens = np.array([len(d) - 1 for d in docs])
            starts[np.cumsum(lens) - lens] = True
            buckets = self.buckets(inputs[None], starts[None])[0]
        else:
            buckets = np.zeros(0, dtype=np.int64)
        return torch.stack(per), buckets, lengths

    def _mix_targets(self, L: torch.Tensor, buckets: np.ndarray) -> torch.Tensor:
        lw = self._log_weights(buckets).T  # [K, N]
        return torch.logsumexp(L + lw, dim=0)  # [N]

    @torch.no_grad()
    def sequence_log_probs(self, token_ids: torch.Tensor, stride: int | None = None) -> torch.Tensor:
        if len(token_ids) < 2:
            return torch.zeros(0, dtype=torch.float64)
        L, buckets, _ = self.component_log_probs([token_ids.cpu()])
        return self._mix_targets(L, buckets)

    @torch.no_grad()
    def documents_log_probs(self, documents: list[torch.Tensor], max_batch_tokens: int = 8192) -> list[torch.Tensor]:
        L, buckets, lengths = self.component_log_probs([d.cpu() for d in documents])
        return list(torch.split(self._mix_targets(L, buckets), lengths))

    def num_parameters(self) -> int:
        return sum(c.num_parameters() for c in self.components) + self.weights.numel()

    # -- persistence: checkpoint.save/load write and read the components ----------------------
    def components_to_save(self, directory: Path) -> list[tuple[str, LanguageModel]]:
        """The components to copy into ``directory``: those built in memory, or all of them when
        ``embed_components``; a component loaded from a directory is referenced by its relative
        path instead (recorded in ``config.component_paths``, which is saved after this)."""
        d = Path(directory)
        paths, copies = [], []
        for k, c in enumerate(self.components):
            source = getattr(c, "source_dir", None)  # set by checkpoint.load
            if self.embed_components or source is None or not (Path(source) / CONFIG_FILE).is_file():
                copies.append((f"component{k}", c))
                paths.append(f"component{k}")
            else:
                paths.append(Path(os.path.relpath(Path(source).resolve(), d.resolve())).as_posix())
        self.config.component_paths = paths
        return copies

    def save_weights(self, directory: Path, vocab=None) -> None:
        from safetensors.torch import save_file

        from ..io import atomic_path

        with atomic_path(Path(directory) / WEIGHTS_FILE) as tmp:
            save_file({"weights": self.weights.contiguous()}, str(tmp))

    @classmethod
    def component_dirs(cls, config: MixtureConfig, directory: Path) -> list[Path]:
        dirs = []
        paths = config.component_paths or [f"component{k}" for k in range(len(config.components))]
        for k, rel in enumerate(paths):
            cdir = Path(directory) / rel
            if not (cdir / CONFIG_FILE).is_file():
                raise ArlmError(
                    f"mixture {directory}: component {k} ({config.components[k]}, stored as {rel!r} relative to the "
                    f"mixture) is missing at {os.path.normpath(cdir)}; keep the mixture and its components together "
                    f"when moving them, or make the mixture with `arlm mix --embed`")
            dirs.append(cdir)
        return dirs

    @classmethod
    def load_weights(cls, config: MixtureConfig, directory: Path, components: list | None = None) -> "MixtureModel":
        from safetensors.torch import load_file

        weights = load_file(str(Path(directory) / WEIGHTS_FILE))["weights"]
        return cls(config, list(components or []), weights).eval()


def fit_weights(L: torch.Tensor, buckets: np.ndarray | None = None, n_buckets: int = 1,
                max_iter: int = 200, tol: float = 1e-7, min_count: float = 0.0) -> tuple[torch.Tensor, list[float]]:
    """EM for mixture weights from held-out component log-probs.

    Args:
        L: float64[K, N], log p_k(w_t | h_t) of each held-out token under each component (nats).
        buckets: int64[N] bucket of each token (None: one bucket).
        n_buckets: number of buckets.
        max_iter, tol: stop after ``max_iter`` iterations or when the mean
            log-likelihood gains less than ``tol`` nats per token.

    Returns:
        ``(weights, history)``: float64[n_buckets, K] weights (rows sum to 1; a
        bucket with no tokens keeps uniform weights) and the mean held-out
        log-likelihood (nats per token) before each iteration and at the end,
        which never decreases.
    """
    K, N = L.shape
    if N == 0:
        raise ArlmError("no held-out tokens to fit mixture weights on")
    if not torch.isfinite(L).any(dim=0).all():
        raise ArlmError("a held-out token has probability 0 under every component")
    b = torch.zeros(N, dtype=torch.long) if buckets is None else torch.as_tensor(buckets, dtype=torch.long)
    w = torch.full((n_buckets, K), 1.0 / K, dtype=torch.float64)
    history = []
    for _ in range(max_iter):
        joint = L + torch.log(w[b]).T  # [K, N]
        ll_t = torch.logsumexp(joint, dim=0)  # [N]
        history.append(float(ll_t.mean()))
        resp = torch.exp(joint - ll_t)  # [K, N] posterior of each component
        sums = torch.zeros(n_buckets, K, dtype=torch.float64).index_add_(0, b, resp.T)  # [buckets, K]
        totals = sums.sum(-1, keepdim=True)
        w = torch.where(totals > 0, sums / totals.clamp_min(1e-300), w)
        if len(history) > 1 and history[-1] - history[-2] < tol:
            break
    ll_t = torch.logsumexp(L + torch.log(w[b]).T, dim=0)
    history.append(float(ll_t.mean()))
    return w, history
