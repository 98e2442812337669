"""The kill -9 campaign, small: SIGKILL `arlm train` 3 times (one during a checkpoint write), resume, compare.

The full campaign (20 kills) is ``python bench/kill9.py``; both run the same code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_kill9_campaign_resumes_bit_identical(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import kill9
    finally:
        sys.path.remove(str(REPO / "bench"))
    lines = []
    assert kill9.campaign(tmp_path, kills=3, steps=30, seed=1, log=lines.append), "\n".join(lines)
    assert sum(re.match(r"kill +\d+/3 ", line) is not None for line in lines) == 3
    assert any("while writing the checkpoint" in line for line in lines)
