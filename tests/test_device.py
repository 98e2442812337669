"""``--device`` on every command that runs a neural model, and where composites put their parts."""

from __future__ import annotations

import json

import pytest
import torch

from arlm.cli import build_parser, main
from arlm.coding import Header, compress_bytes, decompress_bytes
from arlm.device import neural_device, place
from arlm.errors import ArlmError
from arlm.lm import LM
from arlm.vocab import CharVocab

from conftest import NAMES, make_gpt, make_mixer, make_mixture, names_docs

#: the commands that run a neural model (export, import and dyneval only convert or wrap one)
RUN_COMMANDS = ("eval", "score", "sample", "compress", "decompress", "mix", "mixer", "serve", "heatmap")


def test_every_command_that_runs_a_model_takes_device():
    import argparse

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in (*RUN_COMMANDS, "train"):
        helps = [a.help for a in sub.choices[name]._actions if "--device" in a.option_strings]
        assert len(helps) == 1, name
        assert "auto" in helps[0] and "cuda" in helps[0] and "mps" in helps[0], name


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory):
    docs = names_docs(300)
    vocab = CharVocab.train(docs)
    d = tmp_path_factory.mktemp("dev") / "gpt"
    LM(make_gpt(vocab, docs), vocab, "lines").save(d)
    return d


@pytest.mark.parametrize("command", [["eval", "{dir}", str(NAMES)], ["score", "{dir}", "emma", "--per-token"]])
def test_device_cpu_and_auto_give_the_cpu_figures_and_an_absent_device_is_one_line(command, gpt_dir, capsys):
    argv = [x.format(dir=gpt_dir) for x in command] + ["--json"]
    outputs = []
    for device in ([], ["--device", "cpu"], ["--device", "auto"]):  # no GPU here: auto is the CPU
        assert main(argv + device) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1] == outputs[2]
    if not torch.cuda.is_available():
        assert main(argv + ["--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "CUDA is not available" in err, err
    assert main(argv + ["--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


def test_composites_put_only_their_neural_components_on_the_device():
    docs = names_docs(200)
    vocab = CharVocab.train(docs)
    for model in (make_mixture(vocab, docs), make_mixer(vocab, docs)):
        assert neural_device(model).type == "cpu"
        place(model, torch.device("meta"))  # a device with no data: shows where each part went
        kinds = {c.family: neural_device(c).type for c in model.components}
        assert kinds["gpt"] == "meta" and kinds["ngram"] == "cpu", kinds
        assert neural_device(model).type == "meta"


def test_compressed_file_records_the_device_and_decoding_elsewhere_is_refused(gpt_dir, tmp_path, capsys):
    lm = LM.load(gpt_dir)
    blob, _ = compress_bytes(lm, gpt_dir, b"emma\nolivia\n")
    head, pos = Header.unpack(blob, "x")
    assert head.device == "cpu"
    assert decompress_bytes(lm, gpt_dir, blob)[0] == b"emma\nolivia\n"
    # the same stream, its header saying it was coded on a GPU
    head.device = "cuda"
    forged = head.pack() + blob[pos:]
    with pytest.raises(ArlmError, match=r"compressed with the model on cuda, not cpu: decompress it with --device cuda"):
        decompress_bytes(lm, gpt_dir, forged)
    (tmp_path / "z").write_bytes(forged)
    if not torch.cuda.is_available():
        assert main(["decompress", str(gpt_dir), str(tmp_path / "z"), str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "on cuda, which this machine does not have" in err, err
    assert main(["decompress", str(gpt_dir), str(tmp_path / "z"), str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "decompress it with --device cuda" in err, err
    assert not (tmp_path / "out").exists()
