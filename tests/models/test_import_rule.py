"""Models sit below the LM: no module of ``arlm/models/`` imports text handling, saving or the front ends."""

import ast
from pathlib import Path

import arlm.models

FORBIDDEN = ("arlm.lm", "arlm.corpus", "arlm.data", "arlm.checkpoint", "arlm.cli", "arlm.pipeline", "arlm.serve")
MODELS = Path(arlm.models.__file__).parent


def _imported(path: Path) -> list[str]:
    """Absolute names of every module imported anywhere in ``path`` (relative imports resolved)."""
    package = "arlm.models"
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names += [base] + [f"{base}.{a.name}" for a in node.names]  # `from .. import checkpoint` too
    return names


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") or (f == "arlm.cli" and name.startswith("arlm.cli"))
               for f in FORBIDDEN)


def test_models_import_nothing_above_them():
    bad = [f"{p.name}: {n}" for p in sorted(MODELS.glob("*.py")) for n in _imported(p) if _forbidden(n)]
    assert not bad, "arlm/models/ imports upward: " + ", ".join(bad)


def test_the_rule_sees_relative_and_nested_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from .. import checkpoint\n    from ..lm import LM\nimport arlm.cli_train\n")
    found = [n for n in _imported(f) if _forbidden(n)]
    assert "arlm.checkpoint" in found and "arlm.lm" in found and "arlm.cli_train" in found
