"""Integer kernels of the context-mixing family (``arlm.models.cm``), compiled with numba.

Everything that decides a probability is integer arithmetic (12-bit probabilities,
16-bit counters, 16.16 fixed-point mixer weights, integer stretch/squash tables), so
an encoder and a decoder compute bit-identical bit probabilities on any machine;
only the final conversion of the node probabilities to a token's log-probability
uses float64 ``log``.

The method is the one of Mahoney's PAQ/lpaq/zpaq compressors (Mahoney, "Adaptive
weighing of context models for lossless data compression", Florida Tech. TR
CS-2005-16, 2005; lpaq1 (2007) and the zpaq 1.10 specification (2009), read for
the method only): each token is a path of binary decisions in a fixed binary tree
over the vocabulary; every decision is predicted by hashed order-k context
counters, a match model and word contexts, combined by a gated logistic mixer
(stretch -> weighted sum -> squash, one gradient step on the coding cost per
decision) and refined by two adaptive probability maps (APM/SSE).

State layout (all numpy arrays, see ``CMState`` in ``cm.py``):
    cp uint16[C, S], cn uint8[C, S], cc uint8[C, S]: counter probability (16 bit),
        count (adaptation rate) and check byte of each hashed slot, per context C;
    mw int32[n_sets, n_in]: mixer weights (65536 = 1.0);
    apm1 uint16[n_nodes, 33], apm2 uint16[n_nodes * V, 33]: APM interpolation tables;
    mm uint16[32]: P(the match model's predicted bit is right) by match-length bucket;
    hist int32[cap]: every token read (training text included); mtab int32[2**mbits]:
        the position after the last occurrence of each hashed match context;
    sc int64[8]: scalars (see the SC_* indices).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .cm_contexts import (  # noqa: F401  (the scalar slots are part of this module's interface)
    M32, N_SCALARS, SC_DOC_START, SC_HIST_LEN, SC_LAST, SC_MATCH_LEN, SC_MATCH_PTR, SC_PENDING, SC_PREV_WORD, SC_WORD,
    _context_hashes, _mix32)

N_MATCH_BUCKETS = 32
MIXER_MATCH_SETS = 4  # weight sets per node: no match, match length < 16, < 32, longer
MAX_MATCH_VERIFY = 400
APM3_ROWS = 1 << 16
BUCKET = 4  # slots a context may occupy in its table
NQ_SETS = 17  # with a network input, mixer 4's weight sets per node: none, then |stretch(network p)| >> 7
NQ_APM = 24  # with a network input, APM 4's rows per node: the network's stretched p in 24 steps
P0_COLS = 10  # per node: final p, up to 4 mixer outputs (squashed, then stretched), APM 4's row

# 4096 / (1 + exp(-x / 256)) at x = -2048, -1920, …, 2048 (computed once, rounded to integers)
_SQUASH_POINTS = np.array([1, 2, 4, 6, 10, 17, 27, 45, 74, 120, 194, 311, 488, 747, 1102, 1546, 2048, 2550, 2994,
                           3349, 3608, 3785, 3902, 3976, 4022, 4051, 4069, 4079, 4086, 4090, 4092, 4094, 4095],
                          dtype=np.int64)


@njit(cache=True)
def squash(d, points):
    """Logistic function in fixed point: stretch domain d (units of 1/256) -> 12-bit probability."""
    if d > 2047:
        return 4095
    if d < -2047:
        return 1
    w = d & 127
    i = (d >> 7) + 16
    return (points[i] * (128 - w) + points[i + 1] * w + 64) >> 7


def make_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(squash points int64[33], stretch int64[4096] (the inverse of squash), counter
    adaptation reciprocals int64[256]) — all integers, identical everywhere."""
    points = _SQUASH_POINTS.copy()
    stretch = np.zeros(4096, dtype=np.int64)
    pi = 0
    for x in range(-2047, 2048):
        v = int(squash(x, points))
        for i in range(pi, v + 1):
            stretch[i] = x
        pi = max(pi, v + 1)
    stretch[pi:] = 2047
    # counter update rate 1 / (n + 1.5) as a 16-bit fixed-point reciprocal
    recip = np.array([(65536 * 2) // (2 * n + 3) for n in range(256)], dtype=np.int64)
    return points, stretch, recip


@njit(cache=True)
def _match_bucket(length):
    if length < 16:
        return length
    b = 16 + ((length - 16) >> 2)
    return b if b < N_MATCH_BUCKETS else N_MATCH_BUCKETS - 1


@njit(cache=True)
def _apm3_row(j, V, hist, sc, n_nodes):
    """Row of the order-2 APM (the last two tokens and the node, hashed into APM3_ROWS rows
    after the n_nodes * V rows of the order-1 APM)."""
    hl = sc[SC_HIST_LEN]
    t2 = hist[hl - 2] if hl - 2 >= sc[SC_DOC_START] else V
    return n_nodes * V + (_mix32((t2 * (V + 1) + sc[SC_LAST]) * 0x9E3779B1 + j) & (APM3_ROWS - 1))


@njit(cache=True)
def _dot_squash(mw, s, xin, j, n_in):
    dot = 0
    for k in range(n_in):
        dot += np.int64(mw[s, k]) * xin[j, k]
    dot = dot >> 16
    if dot > 2047:
        dot = 2047
    if dot < -2047:
        dot = -2047
    return dot


@njit(cache=True)
def _predict_node(j, V, cp, cn, cc, sm, ch, ih, mw, apm1, apm2, mm, hist, sc, hs, path_nodes, path_bits, path_len,
                  node_depth, points, stretch, slot, chk, hit, smi, bhi, xin, p0, pf, mexp, mset, bits, nqj):
    """Predict decision node j (P(right branch) in 12 bits into pf[j]); keep what the update needs.

    Inputs: per context, stretch(counter) and stretch(state map of (count, counter)); the
    match model; a bias; with a network input (xin has 3C + 3 columns), stretch(nqj), the
    network's 12-bit P(right) (nqj <= 0: none at this position). Three mixers (weight sets by
    node x match length, node x number of contexts seen, node x previous token; with a network
    a fourth, node x the network's confidence) are combined by a final mixer (weights by node),
    then three APMs refine (a fourth keyed by node x the network's quantised p)."""
    C = hs.shape[0]
    smask = (1 << bits) - 1
    n_seen = 0
    for i in range(C):
        x = _mix32(hs[i] ^ ((j + 1) * 0x9E3779B1))
        idx = x & smask
        c = (x >> 24) & 255
        # BUCKET-way bucket: the context's slot is one of BUCKET neighbours; a new context takes
        # the one with the smallest count (so one-off contexts rarely evict established ones)
        base = idx & ~(BUCKET - 1)
        victim = base
        found = False
        for a in range(base, base + BUCKET):
            if cn[i, a] > 0 and cc[i, a] == c:
                idx = a
                found = True
                break
            if cn[i, a] < cn[i, victim]:
                victim = a
        if not found:
            idx = victim
        slot[j, i] = idx
        chk[j, i] = c
        if cn[i, idx] > 0 and cc[i, idx] == c:
            hit[j, i] = 1
            n = np.int64(cn[i, idx])
            q = np.int64(cp[i, idx])
            xin[j, i] = stretch[q >> 4]
            n_seen += 1
        else:
            hit[j, i] = 0
            n = 0
            q = 32768
            xin[j, i] = 0
        r = (n if n < 15 else 15) * 64 + (q >> 10)
        smi[j, i] = r
        xin[j, C + i] = stretch[sm[i, r] >> 4]
        bh = np.int64(ch[i, idx]) if hit[j, i] else 0
        bhi[j, i] = bh
        xin[j, 2 * C + i] = stretch[ih[i, bh] >> 4]
    # match model: the token that followed the longest earlier occurrence of the context
    mexp[j] = -1
    xin[j, 3 * C] = 0
    msel = 0
    mlen = sc[SC_MATCH_LEN]
    if mlen > 0:
        pt = hist[sc[SC_MATCH_PTR]]
        d = node_depth[j]
        if d < path_len[pt] and path_nodes[pt, d] == j:
            e = path_bits[pt, d]
            st = stretch[mm[_match_bucket(mlen)] >> 4]
            xin[j, 3 * C] = st if e == 1 else -st
            mexp[j] = e
            msel = 1 if mlen < 16 else (2 if mlen < 32 else 3)
    xin[j, 3 * C + 1] = 256  # bias
    n_in = xin.shape[1]
    n_nodes = node_depth.shape[0]
    H = 3
    base = n_nodes * (MIXER_MATCH_SETS + C + 1 + V)
    p0[j, 9] = -1
    if n_in == 3 * C + 3:  # the network's input
        H = 4
        nb = 0
        xin[j, 3 * C + 2] = 0
        if nqj > 0:
            sq = stretch[nqj]
            xin[j, 3 * C + 2] = sq
            nb = 1 + ((sq if sq >= 0 else -sq) >> 7)
            p0[j, 9] = n_nodes * V + APM3_ROWS + j * NQ_APM + (((sq + 2048) * NQ_APM) >> 12)
        mset[j, 3] = base + j * NQ_SETS + nb
        base += n_nodes * NQ_SETS
    mset[j, 0] = j * MIXER_MATCH_SETS + msel
    mset[j, 1] = n_nodes * MIXER_MATCH_SETS + j * (C + 1) + n_seen
    mset[j, 2] = n_nodes * (MIXER_MATCH_SETS + C + 1) + j * V + sc[SC_LAST]
    s4 = base + j
    mset[j, H] = s4
    dot = 0
    for h in range(H):
        d = _dot_squash(mw, mset[j, h], xin, j, n_in)
        p0[j, 1 + H + h] = d
        p0[j, 1 + h] = squash(d, points)
        dot += np.int64(mw[s4, h]) * d
    if H == 4:  # the final mixer also weighs the network's input directly
        dot += np.int64(mw[s4, H]) * xin[j, 3 * C + 2]
    dot = dot >> 16
    if dot > 2047:
        dot = 2047
    if dot < -2047:
        dot = -2047
    p = squash(dot, points)
    p0[j, 0] = p
    # APMs: by node, by node and the previous token, by node and the last two tokens (hashed)
    st = stretch[p] + 2048
    lo = st >> 7
    w = st & 127
    a1 = (np.int64(apm1[j, lo]) * (128 - w) + np.int64(apm1[j, lo + 1]) * w) >> 11
    r2 = j * V + sc[SC_LAST]
    a2 = (np.int64(apm2[r2, lo]) * (128 - w) + np.int64(apm2[r2, lo + 1]) * w) >> 11
    r3 = _apm3_row(j, V, hist, sc, n_nodes)
    a3 = (np.int64(apm2[r3, lo]) * (128 - w) + np.int64(apm2[r3, lo + 1]) * w) >> 11
    r4 = p0[j, 9]
    if r4 >= 0:  # and by node and the network's p
        a4 = (np.int64(apm2[r4, lo]) * (128 - w) + np.int64(apm2[r4, lo + 1]) * w) >> 11
        q = (p + a1 + a2 + a3 + 2 * a4 + 3) // 6
    else:
        q = (p + a1 + a2 + a3 + 2) >> 2
    if q < 1:
        q = 1
    if q > 4095:
        q = 4095
    pf[j] = q


@njit(cache=True)
def _update_node(j, y, V, cp, cn, cc, sm, ch, ih, mw, apm1, apm2, mm, hist, sc, hs, stretch, recip, slot, chk, hit, smi, bhi, xin,
                 p0, mexp, mset, limit, mixer_lr, apm_rate):
    """Learn from the observed decision y (0/1) at node j, using what ``_predict_node`` kept."""
    C = hs.shape[0]
    target = 65535 if y else 0
    for i in range(C):
        idx = slot[j, i]
        if hit[j, i] == 0:
            cc[i, idx] = chk[j, i]
            cp[i, idx] = 32768
            cn[i, idx] = 0
            ch[i, idx] = 1
        bh = (np.int64(ch[i, idx]) << 1) | y
        if bh >= 128:
            bh = 64 | (bh & 63)
        ch[i, idx] = bh
        b0 = bhi[j, i]
        a = np.int64(ih[i, b0])
        ih[i, b0] = a + ((target - a) >> 6)
        n = np.int64(cn[i, idx])
        p = np.int64(cp[i, idx])
        p += ((target - p) * recip[n]) >> 16
        cp[i, idx] = p
        if n < limit:
            cn[i, idx] = n + 1
        r = smi[j, i]
        a = np.int64(sm[i, r])
        sm[i, r] = a + ((target - a) >> 6)
    if mexp[j] >= 0:
        b = _match_bucket(sc[SC_MATCH_LEN])
        t = 65535 if y == mexp[j] else 0
        m = np.int64(mm[b])
        mm[b] = m + ((t - m) >> 6)
    n_in = xin.shape[1]
    H = 4 if n_in == 3 * C + 3 else 3
    for h in range(H):
        err = ((y << 12) - p0[j, 1 + h]) * mixer_lr
        s = mset[j, h]
        for k in range(n_in):
            mw[s, k] += (xin[j, k] * err) >> 14
    err = ((y << 12) - p0[j, 0]) * mixer_lr
    s = mset[j, H]
    for h in range(H):
        mw[s, h] += (p0[j, 1 + H + h] * err) >> 14
    if H == 4:
        mw[s, H] += (xin[j, 3 * C + 2] * err) >> 14
    st = stretch[p0[j, 0]] + 2048
    lo = st >> 7
    near = lo + ((st & 127) >> 6)
    a = np.int64(apm1[j, near])
    apm1[j, near] = a + ((target - a) >> apm_rate)
    r2 = j * V + sc[SC_LAST]
    a = np.int64(apm2[r2, near])
    apm2[r2, near] = a + ((target - a) >> apm_rate)
    r3 = _apm3_row(j, V, hist, sc, mset.shape[0])
    a = np.int64(apm2[r3, near])
    apm2[r3, near] = a + ((target - a) >> apm_rate)
    r4 = p0[j, 9]
    if r4 >= 0:
        a = np.int64(apm2[r4, near])
        apm2[r4, near] = a + ((target - a) >> apm_rate)


@njit(cache=True)
def _observe(tok, bos, V, cp, cn, cc, sm, ch, ih, mw, apm1, apm2, mm, hist, mtab, sc, hs, orders, use_word, is_word,
             path_nodes, path_bits, path_len, stretch, recip, slot, chk, hit, smi, bhi, xin, p0, mexp, mset,
             limit, mixer_lr, apm_rate, match_min):
    """Read one token: learn from it (if its decisions were predicted), append it to the
    history, move the match model, and hash the contexts of the next token."""
    if sc[SC_PENDING]:
        for d in range(path_len[tok]):
            _update_node(path_nodes[tok, d], np.int64(path_bits[tok, d]), V, cp, cn, cc, sm, ch, ih, mw, apm1, apm2, mm, hist, sc,
                         hs, stretch, recip, slot, chk, hit, smi, bhi, xin, p0, mexp, mset, limit, mixer_lr, apm_rate)
        sc[SC_PENDING] = 0
    hl = sc[SC_HIST_LEN]
    hist[hl] = tok
    hl += 1
    sc[SC_HIST_LEN] = hl
    sc[SC_LAST] = tok
    if tok == bos:
        sc[SC_DOC_START] = hl - 1
        sc[SC_MATCH_LEN] = 0
        sc[SC_WORD] = 0
        sc[SC_PREV_WORD] = 0
    else:
        if is_word[tok] == 1:
            sc[SC_WORD] = _mix32((sc[SC_WORD] + tok + 1) * 0x2F0B3A4D)
        elif sc[SC_WORD] != 0:
            sc[SC_PREV_WORD] = sc[SC_WORD]
            sc[SC_WORD] = 0
        # match model (lpaq's MatchModel idea): follow the current match or look one up
        if sc[SC_MATCH_LEN] > 0:
            if hist[sc[SC_MATCH_PTR]] == tok and sc[SC_MATCH_PTR] + 1 < hl:
                sc[SC_MATCH_LEN] += 1
                sc[SC_MATCH_PTR] += 1
            else:
                sc[SC_MATCH_LEN] = 0
        if hl - sc[SC_DOC_START] > match_min:
            h = 0
            for m in range(1, match_min + 1):
                h = _mix32(h ^ ((hist[hl - m] + 1) * 0x9E3779B1))
            h = h & (mtab.shape[0] - 1)
            if sc[SC_MATCH_LEN] == 0:
                cand = np.int64(mtab[h])
                if cand > 0:
                    L = 0
                    while L < MAX_MATCH_VERIFY and cand - 1 - L >= 0 and hist[cand - 1 - L] == hist[hl - 1 - L]:
                        L += 1
                    if L >= match_min:
                        sc[SC_MATCH_LEN] = L
                        sc[SC_MATCH_PTR] = cand
            mtab[h] = hl
    _context_hashes(hist, sc, orders, use_word, is_word, hs)


@njit(cache=True)
def _leaf_log_prob(v, pf, path_nodes, path_bits, path_len):
    lp = 0.0
    for d in range(path_len[v]):
        q = pf[path_nodes[v, d]]
        if path_bits[v, d] == 0:
            q = 4096 - q
        lp += np.log(q / 4096.0)
    return lp


@njit(cache=True)
def step_all(tok, bos, V, cp, cn, cc, sm, ch, ih, mw, apm1, apm2, mm, hist, mtab, sc, hs, orders, use_word, is_word,
             path_nodes, path_bits, path_len, node_depth, is_leaf, points, stretch, recip, slot, chk, hit, smi, bhi, xin, p0,
             pf, mexp, mset, bits, limit, mixer_lr, apm_rate, match_min, nq, out):
    """Read ``tok``, then predict every decision node and write log p(v) for every token v into out[V].
    ``nq`` int64[n_nodes]: the network's 12-bit P(right) per node (ignored without a network input)."""
    _observe(tok, bos, V, cp, cn, cc, sm, ch, ih, mw, apm1, apm2, mm, hist, mtab, sc, hs, orders, use_word, is_word,
             path_nodes, path_bits, path_len, stretch, recip, slot, chk, hit, smi, bhi, xin, p0, mexp, mset,
             limit, mixer_lr, apm_rate, match_min)
    n_nodes = node_depth.shape[0]
    for j in range(n_nodes):
        _predict_node(j, V, cp, cn, cc, sm, ch, ih, mw, apm1, apm2, mm, hist, sc, hs, path_nodes, path_bits, path_len,
                      node_depth, points, stretch, slot, chk, hit, smi, bhi, xin, p0, pf, mexp, mset, bits, nq[j])
    sc[SC_PENDING] = 1
    for v in range(V):
        if is_leaf[v]:
            out[v] = _leaf_log_prob(v, pf, path_nodes, path_bits, path_len)
        else:
            out[v] = -np.inf


@njit(cache=True)
def run_sequence(ids, bos, V, cp, cn, cc, sm, ch, ih, mw, apm1, apm2, mm, hist, mtab, sc, hs, orders, use_word, is_word,
                 path_nodes, path_bits, path_len, node_depth, points, stretch, recip, slot, chk, hit, smi, bhi, xin, p0,
                 pf, mexp, mset, bits, limit, mixer_lr, apm_rate, match_min, nq, nq_start, out):
    """Read ids[0..T-1]; out[t] = log p(ids[t+1] | ids[:t+1]) (float64[T-1]). Predicts only the
    nodes on the next token's path: the same integers ``step_all`` computes for them. With a
    network input, nq[t - nq_start] (int64[n_nodes]) is its P(right) per node at t >= nq_start."""
    T = ids.shape[0]
    for t in range(T):
        _observe(ids[t], bos, V, cp, cn, cc, sm, ch, ih, mw, apm1, apm2, mm, hist, mtab, sc, hs, orders, use_word, is_word,
                 path_nodes, path_bits, path_len, stretch, recip, slot, chk, hit, smi, bhi, xin, p0, mexp, mset,
                 limit, mixer_lr, apm_rate, match_min)
        if t + 1 < T:
            nxt = ids[t + 1]
            for d in range(path_len[nxt]):
                j = path_nodes[nxt, d]
                nqj = nq[t - nq_start, j] if t >= nq_start else -1
                _predict_node(j, V, cp, cn, cc, sm, ch, ih, mw, apm1, apm2, mm, hist, sc, hs, path_nodes,
                              path_bits, path_len, node_depth, points, stretch, slot, chk, hit, smi, bhi, xin, p0, pf, mexp,
                              mset, bits, nqj)
            sc[SC_PENDING] = 1
            if path_len[nxt] == 0 and nxt == bos:
                out[t] = -np.inf
            else:
                out[t] = _leaf_log_prob(nxt, pf, path_nodes, path_bits, path_len)
