"""Context hashing of the context-mixing family (``arlm.models.cm``; numba): the order-k, word and
line contexts of the next token, from the token history. Integer arithmetic only."""

from __future__ import annotations

from numba import njit

M32 = 0xFFFFFFFF
# scalar slots of ``sc`` (the state's int64[N_SCALARS] array)
SC_HIST_LEN, SC_DOC_START, SC_MATCH_PTR, SC_MATCH_LEN, SC_WORD, SC_PREV_WORD, SC_PENDING, SC_LAST = range(8)
N_SCALARS = 8


@njit(cache=True)
def _mix32(x):
    x = x & M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    x ^= x >> 16
    return x


@njit(cache=True)
def _context_hashes(hist, sc, orders, use_word, is_word, hs):
    """Hash of each context for the next token: order k = the last k tokens of the
    document (the ``<bos>`` at its start included); then the word contexts (use_word & 1);
    then the line contexts (use_word & 2; is_word[v] == 2 marks the line break): (column,
    the token above it in the previous line) and (the token above, the previous token)."""
    hl = sc[SC_HIST_LEN]
    ds = sc[SC_DOC_START]
    n_orders = orders.shape[0]
    for i in range(n_orders):
        k = orders[i]
        h = (k + 1) * 0x3C6EF372 & M32
        for m in range(1, k + 1):
            pos = hl - m
            if pos < ds:
                break
            h = _mix32(h ^ ((hist[pos] + 1) * 0x9E3779B1))
        hs[i] = _mix32(h + k)
    n = n_orders
    if use_word & 1:
        hs[n] = _mix32(sc[SC_WORD] * 0x2545F491 + 0x51ED27)
        hs[n + 1] = _mix32(sc[SC_WORD] * 0x2545F491 + _mix32(sc[SC_PREV_WORD] + 0x1B873593))
        n += 2
    if use_word & 2:
        p = hl - 1
        col = 0
        while p >= ds and is_word[hist[p]] != 2 and col < 255:
            p -= 1
            col += 1
        above = 0
        if p >= ds and is_word[hist[p]] == 2:  # the previous line is hist[q + 1 .. p - 1]
            q = p - 1
            while q >= ds and is_word[hist[q]] != 2 and p - q < 512:
                q -= 1
            if col < p - q - 1:
                above = hist[q + 1 + col] + 1
        hs[n] = _mix32((min(col, 63) + 1) * 0x6C8E9CF5 + above * 0x3F84D5B5 + 0x2F)
        hs[n + 1] = _mix32(above * 0x27D4EB2F + (sc[SC_LAST] + 1) * 0x165667B1 + 0x4F)
