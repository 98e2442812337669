"""Muon: momentum orthogonalised by Newton–Schulz, for the 2-D hidden matrices; AdamW for the rest.

Muon (Keller Jordan et al. 2024, "Muon: An optimizer for hidden layers in
neural networks", https://kellerjordan.github.io/posts/muon/, the optimizer
of the modded-nanoGPT speedrun) replaces each hidden weight matrix's update
by the nearest semi-orthogonal matrix to its (Nesterov) momentum:

    m <- mu m + g                       (momentum buffer, per matrix)
    u = g + mu m                        (Nesterov)
    O = NewtonSchulz5(u)  ~  U V^T      where u = U S V^T (its SVD)
    W <- W (1 - lr wd) - lr sqrt(max(1, rows / cols)) O

``NewtonSchulz5`` is the quintic iteration X <- a X + (b A + c A^2) X with
A = X X^T and (a, b, c) = (3.4445, -4.7750, 2.0315), five steps from
X = u / ||u||_F (working on the transpose when rows > cols), which pushes every
singular value into roughly [0.7, 1.2] (not exactly 1: the speedrun's trade of
accuracy for speed), in float32 or, as in the speedrun, bfloat16 (``ns_dtype``).

Embeddings, the output head, biases and LayerNorm gains are not hidden
matrices; they are updated by AdamW (Loshchilov & Hutter 2019) inside the same
optimizer (param groups with ``use_muon=False``), so one ``state_dict`` holds
everything a resume needs: the Muon momentum buffers (``momentum_buffer``) and
the AdamW moments (``exp_avg``, ``exp_avg_sq``, ``step``).

Learning rates: the training loop sets one scheduled rate ``lr`` on every
group; a Muon group applies ``lr * lr_ratio`` (``lr_ratio`` = Muon's peak rate
over AdamW's), so one schedule drives both.
"""

from __future__ import annotations

import math

import torch

#: Coefficients of the quintic Newton–Schulz iteration (Jordan et al. 2024).
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz5(g: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Approximate orthogonalisation U V^T of a matrix g [m, n] (g = U S V^T), or of each matrix of a
    stack g [k, m, n], computed in ``dtype``.

    Returns a new tensor of g's shape and of ``dtype`` whose singular values lie near 1
    (about 0.7..1.2 after 5 steps), with g's singular vectors; each matrix of a stack
    is normalised by its own Frobenius norm, so a stack gives what each matrix alone
    gives (one batched product per stage instead of one per matrix). bfloat16 is the
    speedrun's choice (the iteration tolerates its rounding; on CPUs with AMX
    its matrix products are several times faster).
    """
    a, b, c = NS_COEFFS
    x = g.to(dtype)
    transpose = x.shape[-2] > x.shape[-1]
    if transpose:  # iterate on the wide form: A = X X^T is then the smaller square
        x = x.mT
    if x.dim() == 2:
        x = x / (x.norm() + eps)
        for _ in range(steps):
            A = x @ x.t()  # [m, m]
            B = torch.addmm(A, A, A, beta=b, alpha=c)  # b A + c A^2
            x = torch.addmm(x, B, x, beta=a)  # a X + B X
    else:
        x = x / (torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True) + eps)
        for _ in range(steps):
            A = x @ x.mT  # [k, m, m]
            B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b A + c A^2
            x = torch.baddbmm(x, B, x, beta=a)  # a X + B X
    return x.mT if transpose else x


class MuonAdamW(torch.optim.Optimizer):
    """Muon for groups with ``use_muon=True`` (2-D parameters only), AdamW for the others.

    Group keys: ``lr``, ``weight_decay``; Muon groups also ``lr_ratio``,
    ``momentum``, ``nesterov``, ``ns_steps``, ``ns_dtype`` (``"float32"`` or ``"bfloat16"``); AdamW groups ``betas``, ``eps``.
    Every group carries ``betas`` (unused by Muon) so that saved groups look alike.

    Raises:
        ValueError: a Muon group holding a parameter that is not 2-D.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.99), eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5, lr_ratio: float = 1.0,
                 ns_dtype: str = "float32"):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        nesterov=nesterov, ns_steps=ns_steps, lr_ratio=lr_ratio, ns_dtype=ns_dtype, use_muon=False)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["use_muon"]:
                for p in group["params"]:
                    if p.dim() != 2:
                        raise ValueError(f"Muon updates 2-D matrices only, got a parameter of shape {tuple(p.shape)}")
        self._adam_t: dict[torch.Tensor, int] = {}  # AdamW step count per parameter, mirrored on the host

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._adam_t = {}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon(group)
            else:
                self._adamw(group)
        return loss

    def _muon(self, group: dict) -> None:
        """The Muon update of every matrix of ``group``; matrices of one shape are orthogonalised together
        (:func:`newton_schulz5` on their stack: the same numbers as one by one)."""
        lr = group["lr"] * group["lr_ratio"]
        mu, wd = group["momentum"], group["weight_decay"]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)
        bufs = [self.state[p]["momentum_buffer"] for p in params]
        torch._foreach_mul_(bufs, mu)  # one kernel per list on CUDA; per tensor, the same arithmetic, elsewhere
        torch._foreach_add_(bufs, grads)
        us = torch._foreach_add(grads, bufs, alpha=mu) if group["nesterov"] else bufs
        by_shape: dict[tuple, list[int]] = {}
        for i, u in enumerate(us):
            by_shape.setdefault((tuple(u.shape), u.device, u.dtype), []).append(i)
        dtype = getattr(torch, group["ns_dtype"])
        for (shape, _, _), idx in by_shape.items():
            stack = torch.stack([us[i] for i in idx]) if len(idx) > 1 else us[idx[0]][None]  # [k, rows, cols]
            o = newton_schulz5(stack, group["ns_steps"], dtype=dtype).to(params[idx[0]].dtype)
            ps = [params[i] for i in idx]
            if wd:
                torch._foreach_mul_(ps, 1.0 - lr * wd)
            torch._foreach_add_(ps, list(o.unbind(0)), alpha=-lr * math.sqrt(max(1.0, shape[0] / shape[1])))

    def _adamw(self, group: dict) -> None:
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad
            state = self.state[p]
            if "step" not in state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            # the count lives in state["step"] (saved, restored); reading the tensor each step would
            # wait for the device, so the host keeps its own copy after the first read
            t = self._adam_t.get(p)
            t = (int(state["step"].item()) if t is None else t) + 1
            self._adam_t[p] = t
            state["step"] += 1
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(g, 1.0 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
            if wd:
                p.mul_(1.0 - lr * wd)
            denom = (v / (1.0 - beta2 ** t)).sqrt_().add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1.0 - beta1 ** t))


def hidden_matrices(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters Muon updates: 2-D weights of ``nn.Linear`` and recurrent layers, except the output head.

    Embeddings (``nn.Embedding``), the output head (a model's ``lm_head`` or
    ``head``, tied to the embedding or not), biases and gains are left to AdamW,
    as in the speedrun (Muon's orthogonalised step suits maps between hidden
    features, not the rows of a lookup table or the logits).
    """
    excluded = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding) or name in ("lm_head", "head"):
            excluded.update(id(p) for p in module.parameters(recurse=False))
    return [p for p in model.parameters() if p.requires_grad and p.dim() == 2 and id(p) not in excluded]
