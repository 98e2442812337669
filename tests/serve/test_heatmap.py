"""``arlm heatmap``: the surprisal heat map of a text as standalone HTML or a PNG."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest

from arlm.cli import main


def test_heatmap_html_and_png(model_dirs, lms, tmp_path, capsys):
    text = "emma\nolivia"  # a newline is not in the names vocab: it must be refused by name
    f = tmp_path / "bad.txt"
    f.write_text(text, encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "arlm", "heatmap", str(model_dirs["ngram"]), str(f), "--out",
                        str(tmp_path / "x.html")], capture_output=True, text=True)
    assert r.returncode == 2 and "U+000A" in r.stderr and "Traceback" not in r.stderr

    text = "emmaoliviaava"
    f.write_text(text, encoding="utf-8")
    want = -lms["ngram"].log_prob(text, eos=False) / (math.log(2) * len(text))
    r = subprocess.run([sys.executable, "-m", "arlm", "heatmap", str(model_dirs["ngram"]), str(f), "--out",
                        str(tmp_path / "map.html")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.split()[1]) == pytest.approx(want, abs=1e-4)
    assert main(["heatmap", str(model_dirs["ngram"]), str(f), "--out", str(tmp_path / "map.png")]) == 0
    assert float(capsys.readouterr().out.split()[1]) == pytest.approx(want, abs=1e-4)
    html = (tmp_path / "map.html").read_text(encoding="utf-8")
    assert f"{want:.4f} bits per char" in html
    assert len(re.findall(r'<span style="background:#[0-9a-f]{6}" title="p = ', html)) == len(text)
    assert "http" not in html  # standalone: nothing fetched
    png = (tmp_path / "map.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert main(["heatmap", str(model_dirs["ngram"]), str(f), "--out", str(tmp_path / "map.svg")]) == 2
    assert ".html or .png" in capsys.readouterr().err
