"""cm with a network input (arlm.models.cm_neural): the command line, exact coding, node probabilities."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arlm.coding import compress_bytes, decompress_bytes
from arlm.lm import LM
from arlm.models.cm import build_tree
from arlm.models.cm_neural import node_ranges, node_probs

from conftest import names_docs, run_arlm

# multi-byte characters (2, 3 and 4 UTF-8 bytes)
TEXT = "emma naïve café — ☃ olivia 𝄞 ava\r\nzoë\n"
GPT_FLAGS = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8", "--batch-size", "4",
             "--max-steps", "15", "--threads", "1", "--val-fraction", "0"]
CM_FLAGS = ["--orders", "0,1,2,3", "--table-bits", "12", "--match-bits", "10", "--neural-tail", "300",
            "--val-fraction", "0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(directory, train text): a GPT trained for 15 steps, and cm trained with it as its network input."""
    d = tmp_path_factory.mktemp("cmn")
    train = d / "train.txt"
    train.write_text(" ".join(names_docs(400)) + " " + TEXT, encoding="utf-8")
    run_arlm("train", train, "--model", "gpt", "--out", d / "gpt", *GPT_FLAGS)
    run_arlm("train", train, "--model", "cm", "--neural", d / "gpt", "--out", d / "cm", *CM_FLAGS)
    return d


def test_round_trips_and_cli_size_matches_eval_in_fresh_processes(trained):
    d = trained
    cfg = json.loads((d / "cm" / "config.json").read_text())
    assert cfg["config"]["neural"] and (d / "cm" / "neural" / "config.json").is_file()
    for text in [TEXT, "", "é", "a", "emma\n\nava\r\nzoë\n"]:  # a fresh load for each direction
        data = text.encode()
        blob, _ = compress_bytes(LM.load(d / "cm"), d / "cm", data)
        assert decompress_bytes(LM.load(d / "cm"), d / "cm", blob)[0] == data
    src, z, back = d / "long.txt", d / "z", d / "back.txt"
    src.write_text(" ".join(names_docs(700)[400:]) + " " + TEXT, encoding="utf-8")  # far past the GPT's window
    out = json.loads(run_arlm("compress", d / "cm", src, z, "--json", "--no-progress").stdout)
    run_arlm("decompress", d / "cm", z, back, "--no-progress")
    assert back.read_bytes() == src.read_bytes()
    ev = json.loads(run_arlm("eval", d / "cm", src, "--json").stdout)
    bits = ev["nll"] / math.log(2)
    size = z.stat().st_size
    assert abs(8 * size - bits) <= 0.001 * bits + 8 * 64, (size, bits / 8)
    assert out["nll_bits"] == pytest.approx(bits, rel=1e-9)  # eval runs the same network path


def test_the_network_changes_the_probabilities_and_dyneval_wraps_it(trained):
    d = trained
    src = d / "long.txt"
    src.write_text(" ".join(names_docs(700)[400:]), encoding="utf-8")
    run_arlm("train", d / "train.txt", "--model", "cm", "--out", d / "plain", *CM_FLAGS[:6], *CM_FLAGS[-2:])
    run_arlm("train", d / "train.txt", "--model", "cm", "--neural", d / "gpt", "--neural-dyneval", "--out",
             d / "dyn", *CM_FLAGS)
    nll = {k: json.loads(run_arlm("eval", d / k, src, "--json").stdout)["nll"] for k in ("plain", "cm", "dyn")}
    assert len(set(nll.values())) == 3, nll
    assert json.loads((d / "dyn" / "neural" / "config.json").read_text())["family"] == "dyneval"


def test_bad_network_is_one_line_error(trained):
    d = trained
    res = run_arlm("train", d / "train.txt", "--model", "cm", "--neural", d / "cm", "--out", d / "bad", *CM_FLAGS,
                   check=False)
    assert res.returncode == 2 and "--neural" in res.stderr and res.stderr.count("\n") == 1
    res = run_arlm("train", d / "train.txt", "--model", "cm", "--neural", d / "gpt", "--vocab", "byte", "--out",
                   d / "bad", *CM_FLAGS, check=False)
    assert res.returncode == 2 and "vocab" in res.stderr and res.stderr.count("\n") == 1


@settings(max_examples=30, deadline=None)
@given(st.integers(3, 80), st.data())
def test_node_probabilities_multiply_to_the_network_distribution(V, data):
    """Π over a token's path of the nodes' P(branch) is the network's p(token) up to 12-bit rounding."""
    bos = data.draw(st.integers(0, V - 1))
    z = np.array(data.draw(st.lists(st.floats(-6, 6), min_size=V, max_size=V)))
    path_nodes, path_bits, path_len, depth, is_leaf = build_tree(V, bos)
    leaves, lo, mid, hi = node_ranges(path_nodes, path_bits, path_len, len(depth))
    assert sorted(leaves.tolist()) == [v for v in range(V) if v != bos]
    q = np.zeros(len(depth), dtype=np.int64)
    node_probs(z, leaves, lo, mid, hi, q)
    assert q.min() >= 1 and q.max() <= 4095
    p = np.exp(z - z.max())
    p[bos] = 0
    p /= p.sum()
    pl = p[leaves]
    exact = np.array([pl[mid[j]:hi[j]].sum() / pl[lo[j]:hi[j]].sum() for j in range(len(depth))])
    assert np.all(np.abs(q - np.clip(4096 * exact, 1, 4095)) <= 0.5 + 1e-6)  # rounded to 12 bits
    for v in leaves:  # the exact branch fractions multiply to p(v): the ranges are the right subtrees
        prob = np.prod([exact[path_nodes[v, k]] if path_bits[v, k] else 1 - exact[path_nodes[v, k]]
                        for k in range(path_len[v])])
        assert prob == pytest.approx(p[v], rel=1e-9)
