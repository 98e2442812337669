"""A context-mixing model: PAQ-style bitwise prediction, as an exact next-token distribution.

The compressors of the PAQ family (Mahoney, "Adaptive weighing of context models
for lossless data compression", Florida Tech. TR CS-2005-16, 2005; lpaq1, 2007;
the zpaq specification, 2009) predict one binary decision at a time from many
adaptive context models and mix the predictions in the logistic domain. This
family does the same over any vocabulary:

* Each token is a path of binary decisions in a fixed balanced binary tree over
  the V - 1 tokens that can follow (``<bos>`` is not a leaf, so it has
  probability 0). p(token) = Π over its path of P(decision), and because each
  node's two branches get q and 1 - q, the V - 1 leaf probabilities sum to 1.
* Each decision node is predicted, for the current history, by
  - one hashed slot per context (a check byte identifies it among the 4
    slots of its bucket; a new context takes the slot with the smallest count) for the order-k contexts (the last k tokens of the document, for k
    in ``orders``) and, with ``word_contexts``, the current word and the
    current word with the previous one (a word is a run of ``word_token_ids``);
    with ``line_contexts``, the column with the token above it in the previous
    line, and that token with the previous one (lines end at ``newline_id``).
    A slot holds an adaptive counter (rate 1 / (n + 1.5), n capped at
    ``count_limit``) and the slot's last six decisions (a bit history). Each
    context gives three inputs: stretch(counter), stretch of an adaptive map of
    (count, counter), and stretch of an adaptive map of the bit history (the
    indirect modelling of zpaq's ICM, simplified);
  - a match model: the token that followed the longest earlier occurrence (at
    least ``match_min`` tokens long, in the training text or the document) of
    the current context; its input is ±stretch(P(the match is right | length));
  - a bias.
* Three logistic mixers combine the inputs, p = squash(Σ_i w_i · stretch(p_i)),
  with weight sets selected by node x match length, node x number of contexts
  seen, and node x previous token; after each decision w_i += lr · (y - p) ·
  stretch(p_i) (Mahoney 2005). A final mixer per node combines the three.
* Three adaptive probability maps (SSE; lpaq1's APM) refine p, by node, by
  node and previous token, and by node and the last two tokens (hashed); the
  final p is the average of the mixer's and theirs, clipped to [1, 4095]/4096.

With a network input (``neural``: a GPT, LSTM or dyneval model on the same vocab, embedded in
the saved directory as ``neural/``), the network is stepped one token at a time
(``LanguageModel.step``, torch on one thread) and its distribution becomes, at every
node, the 12-bit probability of the right branch (its right subtree's mass over the
node's, ``cm_neural.node_probs``): one more input (stretch of it) of every mixer,
the final one included, a fourth first-layer mixer whose weight set is selected by
node x the network's confidence (|stretch| in 16 steps), and a fourth APM keyed by
node x its quantised probability (weighted 2/6 in the final average). ``fit`` reads only the last ``neural_tail``
training tokens with the network (after a warm-up of its window): stepping a network
costs far more than the integer model.

Training (``fit``) reads the training documents once through the model: the
counters, mixer weights, APMs, the token history and the match index are the
saved weights. Scoring (``step``, ``logits``, ``sequence_log_probs``) starts each
sequence from a copy of the trained state and keeps adapting on the sequence
(prequential: p(x_t | x_<t) depends on the training text and x_<t only, so
Π_t p(x_t | x_<t) is exact and the scores of a prefix never depend on what
follows, DESIGN.md §8). Independent sequences never share state.

Determinism: every probability is integer arithmetic (``cm_kernels``), run on one
thread; the final log-probabilities are float64 ``log`` of 12-bit ratios, so two
loads of a model give identical log-probs, and ``compress``/``decompress``
reproduce each other's distributions bit for bit on the same machine. With a network
input, the network's floats are the same in ``step`` (compress, decompress) and
``sequence_log_probs`` (``arlm eval``) because both run ``step`` token by token on one
thread; they are then rounded to integers, so encoder, decoder and eval agree exactly
with the same model directory, torch version and kind of CPU (a dyneval network
included: its updates run in that same loop).
``step`` predicts all V - 1 nodes (a full distribution); ``sequence_log_probs``
predicts only the nodes on the observed token's path, which are the same integers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import ArlmError
from . import cm_kernels as K
from ..paths import WEIGHTS_FILE
from .base import LanguageModel
from .cm_neural import NeuralInput, node_ranges
from .cm_tree import build_tree, newline_id, word_token_ids  # noqa: F401  (part of this module's interface)

MAX_CM_ORDER = 24


@dataclasses.dataclass
class CMConfig:
    """Hyperparameters of the context-mixing family (see the module docstring).

    ``orders``: context orders in tokens (0 = the node alone); ``table_bits``: log2 of the
    slots of each context's hash table; ``count_limit``: the counters' adaptation count
    cap (rate ≥ 1 / (limit + 1.5)); ``mixer_lr``: the mixer's learning rate in units of
    2**-14 (w += x · err · lr >> 14 in 16.16 fixed point); ``apm_rate``: APM update shift;
    ``match_min``: shortest context (tokens) the match model follows; ``match_bits``:
    log2 of its index size; ``word_contexts``: add the word and word-pair contexts;
    ``word_token_ids``: the tokens that make up words (from the vocab at training);
    ``line_contexts``: add the line contexts; ``newline_id``: the line break token (-1: none); ``neural``:
    where the network input came from (None: no network; the saved model embeds it as ``neural/``);
    ``neural_dyneval``: it was wrapped in dynamic evaluation; ``neural_tail``: training tokens read
    with it."""

    vocab_size: int
    bos_id: int
    eos_id: int
    orders: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2, 3, 4, 5, 6, 7, 8, 10], metadata={
        "help": "cm: context orders in tokens (0 = none), one hashed counter table each", "metavar": "K,K,…"})
    table_bits: int = dataclasses.field(default=22, metadata={"help": "cm: log2 of the slots of each context's table"})
    count_limit: int = dataclasses.field(default=255, metadata={
        "help": "cm: counters adapt at rate 1/(n+1.5) with n capped here (smaller: faster forgetting)"})
    mixer_lr: int = dataclasses.field(default=2, metadata={"help": "cm: mixer learning rate, in units of 2^-14"})
    apm_rate: int = dataclasses.field(default=7, metadata={"help": "cm: APM (SSE) update shift (larger: slower)"})
    match_min: int = dataclasses.field(default=4, metadata={
        "help": "cm: shortest repeated context (tokens) the match model follows"})
    match_bits: int = dataclasses.field(default=20, metadata={"help": "cm: log2 of the match model's index size"})
    word_contexts: bool = dataclasses.field(default=True, metadata={
        "help": "cm: leave out the word and word-pair contexts"})  # the help of the flag --no-word-contexts
    word_token_ids: list[int] = dataclasses.field(default_factory=list)
    #: what a model saved before a field existed computed (``config_from_dict``)
    SAVED_BEFORE: ClassVar[dict] = {"line_contexts": False}
    line_contexts: bool = dataclasses.field(default=True, metadata={
        "help": "cm: leave out the two line contexts: (column, the token above in the previous line), (that "
                "token, the previous token)"})  # the help of the flag --no-line-contexts
    newline_id: int = -1
    neural: str | None = dataclasses.field(default=None, metadata={
        "help": "cm: a GPT or LSTM model directory on the same vocab: its probability of each branch of the "
                "vocab tree becomes a mixer input (the saved model embeds it)", "metavar": "DIR"})
    neural_dyneval: bool = dataclasses.field(default=False, metadata={
        "help": "cm: with --neural, keep training the network on the text it reads (dynamic evaluation)"})
    neural_tail: int = dataclasses.field(default=20000, metadata={
        "help": "cm: with --neural, the last N training tokens are also read with the network (so the mixer "
                "learns its weight)"})


#: the arrays that make up a trained state (saved in model.safetensors)
STATE_ARRAYS = ("cp", "cn", "cc", "sm", "ch", "ih", "mw", "apm1", "apm2", "mm", "hist", "mtab", "sc")


class CMState:
    """One sequence's adaptive state: the tables (copied from the trained model when the
    sequence starts, then updated in place by ``step``) and per-step scratch arrays."""

    def __init__(self, arrays: dict[str, np.ndarray], n_nodes: int, n_ctx: int, n_in: int):
        self.a = arrays
        self.neural = None  # the network's state (``step``)
        self.hs = np.zeros(n_ctx, dtype=np.int64)
        self.slot = np.zeros((n_nodes, n_ctx), dtype=np.int64)
        self.chk = np.zeros((n_nodes, n_ctx), dtype=np.uint8)
        self.hit = np.zeros((n_nodes, n_ctx), dtype=np.uint8)
        self.smi = np.zeros((n_nodes, n_ctx), dtype=np.int64)
        self.bhi = np.zeros((n_nodes, n_ctx), dtype=np.int64)
        self.xin = np.zeros((n_nodes, n_in), dtype=np.int64)
        self.p0 = np.zeros((n_nodes, K.P0_COLS), dtype=np.int64)
        self.pf = np.zeros(n_nodes, dtype=np.int64)
        self.mexp = np.zeros(n_nodes, dtype=np.int64)
        self.mset = np.zeros((n_nodes, 5), dtype=np.int64)

    def reserve(self, extra: int) -> None:
        """Make room in the history for ``extra`` more tokens."""
        hist, used = self.a["hist"], int(self.a["sc"][K.SC_HIST_LEN])
        if used + extra > hist.shape[0]:
            grown = np.zeros(max(2 * hist.shape[0], used + extra + 1024), dtype=np.int32)
            grown[:used] = hist[:used]
            self.a["hist"] = grown


class CMModel(LanguageModel):
    """The context-mixing model of the module docstring. ``block_size`` is None (the whole
    history is used); ``windowed`` is False."""

    family = "cm"

    def __init__(self, config: CMConfig, arrays: dict[str, np.ndarray] | None = None,
                 neural: LanguageModel | None = None):
        super().__init__()
        if bool(config.neural) != (neural is not None):
            raise ArlmError("cm: config.neural names a network but none was given (or the reverse)")
        if config.neural_tail < 0:
            raise ArlmError(f"cm neural_tail must be >= 0, got {config.neural_tail}")
        c = config
        if not c.orders or any(not 0 <= k <= MAX_CM_ORDER for k in c.orders):
            raise ArlmError(f"cm orders must be in 0..{MAX_CM_ORDER}, got {c.orders}")
        if not 10 <= c.table_bits <= 24:
            raise ArlmError(f"cm table_bits must be in 10..24, got {c.table_bits}")
        if not 8 <= c.match_bits <= 26:
            raise ArlmError(f"cm match_bits must be in 8..26, got {c.match_bits}")
        if not 1 <= c.count_limit <= 255:
            raise ArlmError(f"cm count_limit must be in 1..255, got {c.count_limit}")
        if not 1 <= c.match_min <= 64:
            raise ArlmError(f"cm match_min must be in 1..64, got {c.match_min}")
        if not 0 <= c.mixer_lr <= 1024 or not 1 <= c.apm_rate <= 15:
            raise ArlmError(f"cm mixer_lr must be in 0..64 and apm_rate in 1..15, got {c.mixer_lr}, {c.apm_rate}")
        self.config = c
        (self.path_nodes, self.path_bits, self.path_len, self.node_depth, self.is_leaf) = build_tree(
            c.vocab_size, c.bos_id)
        self.n_nodes = len(self.node_depth)
        self.n_ctx = len(c.orders) + (2 if c.word_contexts else 0) + (2 if c.line_contexts else 0)
        self.context_kinds = int(c.word_contexts) | (2 if c.line_contexts else 0)
        self.orders = np.array(c.orders, dtype=np.int64)
        self.is_word = np.zeros(c.vocab_size, dtype=np.uint8)
        for v in c.word_token_ids:
            if 0 <= v < c.vocab_size and v not in (c.bos_id, c.eos_id):
                self.is_word[v] = 1
        if 0 <= c.newline_id < c.vocab_size:
            self.is_word[c.newline_id] = 2
        self.points, self.stretch, self.recip = K.make_tables()
        self.neural = neural
        self.nin = None if neural is None else NeuralInput(neural, c.vocab_size, c.bos_id, c.eos_id, node_ranges(
            self.path_nodes, self.path_bits, self.path_len, self.n_nodes))
        self.n_in = 3 * self.n_ctx + (3 if neural is not None else 2)
        self.arrays = arrays if arrays is not None else self._fresh_arrays()
        self._check_arrays(self.arrays)

    # -- state ---------------------------------------------------------------------------
    def _fresh_arrays(self) -> dict[str, np.ndarray]:
        c, n = self.config, self.n_nodes
        S = 1 << c.table_bits
        # state map: row (count, counter // 1024) starts at the counter's own probability
        sm_row = np.array([(q % 64) * 1024 + 512 for q in range(16 * 64)], dtype=np.uint16)
        apm_row = np.array([K.squash((i - 16) * 128, self.points) * 16 for i in range(33)], dtype=np.uint16)
        return {
            "cp": np.full((self.n_ctx, S), 32768, dtype=np.uint16),
            "cn": np.zeros((self.n_ctx, S), dtype=np.uint8),
            "cc": np.zeros((self.n_ctx, S), dtype=np.uint8),
            "sm": np.tile(sm_row, (self.n_ctx, 1)),
            "ch": np.zeros((self.n_ctx, S), dtype=np.uint8),
            "ih": np.full((self.n_ctx, 128), 32768, dtype=np.uint16),
            "mw": self._fresh_mixers(),
            "apm1": np.tile(apm_row, (max(n, 1), 1)),
            "apm2": np.tile(apm_row, (max(n, 1) * c.vocab_size + K.APM3_ROWS + self._nq_apm_rows(), 1)),
            "mm": np.full(K.N_MATCH_BUCKETS, 49152, dtype=np.uint16),
            "hist": np.zeros(1024, dtype=np.int32),
            "mtab": np.zeros(1 << c.match_bits, dtype=np.int32),
            "sc": np.zeros(K.N_SCALARS, dtype=np.int64),
        }

    def _nq_apm_rows(self) -> int:
        return max(self.n_nodes, 1) * K.NQ_APM if self.neural is not None else 0

    def _fresh_mixers(self) -> np.ndarray:
        """Rows: mixer 1 (node x match length), mixer 2 (node x contexts seen), mixer 3 (node x
        previous token), with a network mixer 4 (node x its confidence), then the final mixer
        (per node; its first 3 or 4 columns weigh the others)."""
        n, C, V = max(self.n_nodes, 1), self.n_ctx, self.config.vocab_size
        H = 3 if self.neural is None else 4
        first = n * (K.MIXER_MATCH_SETS + C + 1 + V + (K.NQ_SETS if H == 4 else 0))
        mw = np.full((first + n, self.n_in), 1 << 13, dtype=np.int32)
        if H == 4:
            mw[:first, -1] = 1 << 15  # the network's input starts at weight 0.5
        mw[first:] = 0
        mw[first:, :H] = 65536 // H
        return mw

    def _check_arrays(self, a: dict[str, np.ndarray]) -> None:
        fresh_shapes = {"cp": (self.n_ctx, 1 << self.config.table_bits), "mm": (K.N_MATCH_BUCKETS,),
                        "mw": self._fresh_mixers().shape,
                        "sc": (K.N_SCALARS,), "mtab": (1 << self.config.match_bits,)}
        missing = [k for k in STATE_ARRAYS if k not in a]
        if missing:
            raise ArlmError(f"cm weights lack {', '.join(missing)}: the model directory is damaged or from another version")
        for k, shape in fresh_shapes.items():
            if a[k].shape != shape:
                raise ArlmError(f"cm weight {k!r} has shape {a[k].shape}, config says {shape}: config.json and "
                                "model.safetensors do not match")

    def new_state(self) -> CMState:
        """A sequence's state: a copy of the trained tables (reading never changes the model)."""
        arrays = {k: v.copy() for k, v in self.arrays.items()}
        arrays["sc"][K.SC_PENDING] = 0
        return CMState(arrays, self.n_nodes, self.n_ctx, self.n_in)

    def _args(self, st: CMState):
        a = self.arrays if st is None else st.a
        return (a["cp"], a["cn"], a["cc"], a["sm"], a["ch"], a["ih"], a["mw"], a["apm1"], a["apm2"], a["mm"], a["hist"], a["mtab"], a["sc"])

    def _run(self, st: CMState, ids: np.ndarray, nq_start: int = 0) -> np.ndarray:
        """log p(ids[t+1] | ids[:t+1]) for t < T-1 (float64[T-1]); reads every id into ``st``; a
        network input (if any) is read from position ``nq_start`` on (after a warm-up context)."""
        c = self.config
        st.reserve(len(ids))
        out = np.zeros(max(len(ids) - 1, 0), dtype=np.float64)
        if len(ids) == 0:
            return out
        if self.nin is None:
            nq, nq_start = np.zeros((1, 1), dtype=np.int64), len(ids)
        else:
            nq_start = min(nq_start, len(ids))
            nq = self.nin.rows(ids, nq_start, warm=self.block_warm())
            nq = nq if len(nq) else np.zeros((1, 1), dtype=np.int64)
        K.run_sequence(ids.astype(np.int64), c.bos_id, c.vocab_size, *self._args(st), st.hs, self.orders,
                       self.context_kinds, self.is_word, self.path_nodes, self.path_bits, self.path_len,
                       self.node_depth, self.points, self.stretch, self.recip, st.slot, st.chk, st.hit, st.smi, st.bhi, st.xin,
                       st.p0, st.pf, st.mexp, st.mset, c.table_bits, c.count_limit, c.mixer_lr, c.apm_rate,
                       c.match_min, nq, nq_start, out)
        st.a["sc"][K.SC_PENDING] = 0  # nothing predicted after the last token
        return out

    def _step_one(self, st: CMState, tok: int) -> np.ndarray:
        c = self.config
        st.reserve(1)
        out = np.empty(c.vocab_size, dtype=np.float64)
        if self.nin is None:
            nq = np.zeros(max(self.n_nodes, 1), dtype=np.int64)
        else:
            nq, st.neural = self.nin.row(tok, st.neural)
        K.step_all(tok, c.bos_id, c.vocab_size, *self._args(st), st.hs, self.orders, self.context_kinds,
                   self.is_word, self.path_nodes, self.path_bits, self.path_len, self.node_depth, self.is_leaf,
                   self.points, self.stretch, self.recip, st.slot, st.chk, st.hit, st.smi, st.bhi, st.xin, st.p0, st.pf, st.mexp,
                   st.mset, c.table_bits, c.count_limit, c.mixer_lr, c.apm_rate, c.match_min, nq, out)
        return out

    # -- training --------------------------------------------------------------------------
    def fit(self, documents: list[np.ndarray]) -> None:
        """Read training sequences (int arrays, normally ``[<bos>, …, <eos>]``) once, in order,
        adapting the model's own tables (the history carries over between documents)."""
        st = CMState(self.arrays, self.n_nodes, self.n_ctx, self.n_in)
        st.reserve(sum(len(d) for d in documents))
        left = sum(len(d) for d in documents)  # tokens still to read
        for d in documents:
            left -= len(d)
            # the network reads the last neural_tail tokens (positions from nq_start in this document)
            self._run(st, np.asarray(d, dtype=np.int64), nq_start=max(0, len(d) + left - self.config.neural_tail))
        self.arrays = st.a

    def block_warm(self) -> int:
        """Tokens the network reads before its first input in ``fit``'s tail (its window, else 256)."""
        b = getattr(getattr(self.neural, "base", self.neural), "block_size", None)
        return int(b) if b else 256

    # -- the contract ----------------------------------------------------------------------
    @property
    def block_size(self) -> None:
        return None

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def step(self, token_ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """One token per row: LongTensor[B] -> (DoubleTensor[B, V] log-probs, state); ``state``
        (a list of ``CMState``, one per row) is updated in place."""
        toks = token_ids.detach().cpu().reshape(-1).tolist()
        states = state if state is not None else [self.new_state() for _ in toks]
        rows = [self._step_one(st, int(t)) for st, t in zip(states, toks)]
        return torch.from_numpy(np.stack(rows)), states  # [B, V]

    @torch.no_grad()
    def logits(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Natural-log next-token probabilities: LongTensor[B, T] -> DoubleTensor[B, T, V] (via ``step``)."""
        B, T = token_ids.shape
        out = np.zeros((B, T, self.config.vocab_size), dtype=np.float64)
        for b, row in enumerate(token_ids.detach().cpu().tolist()):
            st = self.new_state()
            for t, tok in enumerate(row):
                out[b, t] = self._step_one(st, int(tok))
        return torch.from_numpy(out)  # [B, T, V]

    @torch.no_grad()
    def sequence_log_probs(self, token_ids: torch.Tensor, stride: int | None = None) -> torch.Tensor:
        """log p(token_ids[t+1] | token_ids[:t+1]) (nats), float64[T-1]; ``stride`` is ignored."""
        if len(token_ids) < 2:
            return torch.zeros(0, dtype=torch.float64)
        return torch.from_numpy(self._run(self.new_state(), token_ids.detach().cpu().numpy()))

    @torch.no_grad()
    def documents_log_probs(self, documents: list[torch.Tensor], max_batch_tokens: int = 0) -> list[torch.Tensor]:
        return [self.sequence_log_probs(d) for d in documents]

    def num_parameters(self) -> int:
        own = int(sum(v.size for k, v in self.arrays.items() if k not in ("hist", "sc")))
        return own + (self.neural.num_parameters() if self.neural is not None else 0)

    # -- persistence -------------------------------------------------------------------------
    def components_to_save(self, directory: Path) -> list[tuple[str, LanguageModel]]:
        return [("neural", self.neural)] if self.neural is not None else []

    @classmethod
    def component_dirs(cls, config: CMConfig, directory: Path) -> list[Path]:
        return [Path(directory) / "neural"] if config.neural else []

    def save_weights(self, directory: Path, vocab=None) -> None:
        from safetensors.numpy import save_file

        from ..io import atomic_path

        arrays = dict(self.arrays)
        n = int(arrays["sc"][K.SC_HIST_LEN])
        arrays["hist"] = arrays["hist"][:n].copy() if n else np.zeros(1, dtype=np.int32)
        with atomic_path(Path(directory) / WEIGHTS_FILE) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp), metadata={"format": "arlm-cm"})

    @classmethod
    def load_weights(cls, config: CMConfig, directory: Path, components: list | None = None) -> "CMModel":
        from safetensors.numpy import load_file

        path = Path(directory) / WEIGHTS_FILE
        if not path.is_file():
            raise ArlmError(f"{directory} is incomplete: model.safetensors is missing")
        return cls(config, dict(load_file(str(path))), (components or [None])[0]).eval()
