"""An online gated mixer: component models combined in the log domain, weights learnt while reading.

    p(w | h) ∝ exp( Σ_k β_{s(h),k} · log p_k(w | h) )

(with ``β = β_shared + β_s``) is geometric (log-linear) mixing, the multi-symbol form of the logistic mixing
of the PAQ/zpaq compressors (Mahoney, "Adaptive weighing of context models for
lossless data compression", Florida Tech. TR CS-2005-16, 2005; Mattern, "Mixing
strategies in data compression", DCC 2012, shows that geometric mixing is the
generalisation of logistic mixing to any alphabet). The weight set
``β_s`` is selected by a small context ``s(h)`` ("gating"): the context
features of chosen n-gram or cache components (the order of the longest
history they have seen crossed with a log-count bin, as in the bucketed
``mixture``). After each token x the selected set takes one step of online
gradient descent on the log loss (Mahoney 2005):

    β_{s,k} += η · ( log p_k(x | h) − Σ_w p(w | h) log p_k(w | h) )

Everything the mixer learns comes from tokens already read, so p(x_t | x_<t)
depends only on the past and p(x) = Π_t p(x_t | x_<t) is exact: the mixer is
prequential ("adaptive", DESIGN.md §8). Each document starts from the saved
initial weights. Component log-probabilities are floored at ``LOG_FLOOR`` (a
proper component never reaches it in practice) so that a negative weight cannot
turn a zero into infinity; ``<bos>`` always gets probability 0.

``logits``, ``sequence_log_probs`` and ``step`` all run the same token-by-token
loop (float64 numpy), so scores and compression agree exactly.

A saved mixer directory embeds its components as ``component0/``, … and stores
the initial weights, float64[1 + n_sets, K'] (the shared row first; K' counts the
linear-mixture input), in ``model.safetensors``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..errors import ArlmError
from ..paths import WEIGHTS_FILE
from .base import LanguageModel

LOG_FLOOR = -30.0  # nats


@dataclasses.dataclass
class MixerConfig:
    """``components``: component families (for reading); ``select_components``: indices of
    the n-gram/cache components whose context features select the weight set (empty:
    one set); ``learning_rate``: η of the online update (per token, nats⁻¹);
    ``linear_input``: add log(mean_k p_k) (the equal-weight linear mixture) as one more
    input, so that the mixer can choose between linear and geometric combination."""

    vocab_size: int
    bos_id: int
    eos_id: int
    components: list[str] = dataclasses.field(default_factory=list)
    select_components: list[int] = dataclasses.field(default_factory=list)
    learning_rate: float = 0.002
    linear_input: bool = True


class MixerState:
    """Component states, the current weights [n_sets, K] and the pending prediction
    (component log-probs [K, V], mixed probs [V], selected set) awaiting its token."""

    __slots__ = ("components", "weights", "pending")

    def __init__(self, components, weights, pending=None):
        self.components = components
        self.weights = weights
        self.pending = pending


class MixerModel(LanguageModel):
    """The online gated mixer of the module docstring; ``block_size`` is None."""

    family = "mixer"

    def __init__(self, config: MixerConfig, components: list[LanguageModel], weights: torch.Tensor | None = None):
        super().__init__()
        if not components:
            raise ArlmError("a mixer needs at least one component")
        for c in components:
            if c.vocab_size != config.vocab_size or c.bos_id != config.bos_id or c.eos_id != config.eos_id:
                raise ArlmError("mixer components must share one vocabulary")
        for k in config.select_components:
            if not 0 <= k < len(components) or not hasattr(components[k], "state_features"):
                raise ArlmError(f"component {k} cannot select weight sets (only n-gram and cache components can)")
        if not config.learning_rate >= 0:
            raise ArlmError(f"learning rate must be >= 0, got {config.learning_rate}")
        self.config = config
        self.components = torch.nn.ModuleList(components)
        K = self.n_inputs
        if weights is None:  # the shared row starts as the equal-weight geometric mean; the sets add nothing yet
            weights = torch.zeros((1 + self.n_sets, K), dtype=torch.float64)
            weights[0] = 1.0 / K
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float64).reshape(1 + self.n_sets, K))

    @property
    def n_inputs(self) -> int:
        return len(self.components) + (1 if self.config.linear_input else 0)

    @property
    def n_sets(self) -> int:
        n = 1
        for k in self.config.select_components:
            n *= self.components[k].feature_size
        return n

    @property
    def block_size(self) -> None:
        return None

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    # -- one position -------------------------------------------------------------------
    def _select(self, comp_states: list, batch: int) -> np.ndarray:
        """The weight set of each row, int64[B], from the selecting components' context features."""
        s = np.zeros(batch, dtype=np.int64)
        for k in self.config.select_components:
            s = s * self.components[k].feature_size + self.components[k].state_features(comp_states[k])
        return s

    def _predict(self, outs: list[torch.Tensor], comp_states: list, weights: np.ndarray):
        """Mixed log-probs float64[B, V] and what the update needs."""
        L = mixer_inputs(np.stack([torch.log_softmax(o.double(), -1).cpu().numpy() for o in outs], axis=1),
                         self.config.linear_input)  # [B, K', V]
        sets = self._select(comp_states, L.shape[0])
        return mix(L, sets, weights, self.config.bos_id)

    def _update(self, weights: np.ndarray, pending, token_ids: np.ndarray) -> np.ndarray:
        return update(weights, pending, token_ids, self.config.learning_rate)

    # -- the contract ----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, token_ids: torch.Tensor, state: MixerState | None = None) -> tuple[torch.Tensor, MixerState]:
        """One token per row: (DoubleTensor[B, V] log-probs, state). The token first updates the
        weight set that predicted it (if any), then every component steps."""
        toks = token_ids.detach().cpu().reshape(-1)
        if state is None:
            state = MixerState([None] * len(self.components), self.weights.numpy().copy())
        weights = state.weights
        if state.pending is not None:
            weights = self._update(weights, state.pending, toks.numpy())
        outs, comp_states = [], []
        for c, s in zip(self.components, state.components):
            o, s2 = c.step(toks.to(c.device), s)
            outs.append(o)
            comp_states.append(s2)
        log_probs, pending = self._predict(outs, comp_states, weights)
        return torch.from_numpy(log_probs), MixerState(comp_states, weights, pending)

    @torch.no_grad()
    def logits(self, token_ids: torch.Tensor) -> torch.Tensor:
        """log p(· | token_ids[:, :t+1]) at every t: LongTensor[B, T] -> DoubleTensor[B, T, V] (via ``step``)."""
        state, rows = None, []
        for t in range(token_ids.shape[1]):
            out, state = self.step(token_ids[:, t], state)
            rows.append(out)
        if not rows:
            return torch.zeros(token_ids.shape[0], 0, self.vocab_size, dtype=torch.float64)
        return torch.stack(rows, dim=1)  # [B, T, V]

    @torch.no_grad()
    def sequence_log_probs(self, token_ids: torch.Tensor, stride: int | None = None) -> torch.Tensor:
        """log p(token_ids[t+1] | token_ids[:t+1]), float64[T-1], by the ``step`` loop."""
        return self.stepwise_log_probs(token_ids)

    @torch.no_grad()
    def documents_log_probs(self, documents: list[torch.Tensor], max_batch_tokens: int = 0) -> list[torch.Tensor]:
        return [self.sequence_log_probs(d) for d in documents]

    def num_parameters(self) -> int:
        return sum(c.num_parameters() for c in self.components) + self.weights.numel()

    # -- persistence ------------------------------------------------------------------------------
    def components_to_save(self, directory: Path) -> list[tuple[str, LanguageModel]]:
        return [(f"component{k}", c) for k, c in enumerate(self.components)]

    def save_weights(self, directory: Path, vocab=None) -> None:
        from safetensors.torch import save_file

        from ..io import atomic_path

        with atomic_path(Path(directory) / WEIGHTS_FILE) as tmp:
            save_file({"weights": self.weights.contiguous()}, str(tmp))

    @classmethod
    def component_dirs(cls, config: MixerConfig, directory: Path) -> list[Path]:
        return [Path(directory) / f"component{k}" for k in range(len(config.components))]

    @classmethod
    def load_weights(cls, config: MixerConfig, directory: Path, components: list | None = None) -> "MixerModel":
        from safetensors.torch import load_file

        weights = load_file(str(Path(directory) / WEIGHTS_FILE))["weights"]
        return cls(config, list(components or []), weights).eval()


def mixer_inputs(L: np.ndarray, linear_input: bool) -> np.ndarray:
    """Component log-probs float64[B, K, V] -> the mixer's inputs [B, K (+1), V]: with
    ``linear_input``, log(mean_k p_k) is appended."""
    if not linear_input:
        return L
    with np.errstate(divide="ignore"):
        m = L.max(axis=1, keepdims=True)  # [B, 1, V]
        safe = np.where(np.isfinite(m), m, 0.0)
        lin = safe + np.log(np.exp(L - safe).mean(axis=1, keepdims=True))  # [B, 1, V]
    return np.concatenate([L, lin], axis=1)


def mix(L: np.ndarray, sets: np.ndarray, weights: np.ndarray, bos_id: int):
    """Geometric mixing of inputs L float64[B, K, V] (log-probs, nats) with the weights
    ``weights[0] + weights[1 + sets]`` [B, K] (a shared row plus the selected set):
    returns (log-probs float64[B, V], pending update data)."""
    L = np.maximum(L, LOG_FLOOR)
    beta = weights[0] + weights[1 + sets]  # [B, K]
    z = np.einsum("bk,bkv->bv", beta, L)  # [B, V]
    z[:, bos_id] = -np.inf
    z -= z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))  # [B, V]
    return log_probs, (L, np.exp(log_probs), sets)


def update(weights: np.ndarray, pending, token_ids: np.ndarray, learning_rate: float) -> np.ndarray:
    """One online gradient step on −log p(token) for the shared row and each row's weight set
    (rows in order); a new array."""
    L, probs, sets = pending
    rows = np.arange(L.shape[0])
    expected = np.einsum("bkv,bv->bk", L, probs)  # [B, K]
    grad = L[rows, :, token_ids] - expected  # [B, K]: d log p(x) / d beta
    weights = weights.copy()
    for b in rows:  # rows may share a set: apply in order
        weights[0] += learning_rate * grad[b]
        weights[1 + sets[b]] += learning_rate * grad[b]
    return weights
