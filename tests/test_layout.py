"""Rooms one can read in a sitting: no module of ``arlm/`` over 450 lines, no function over 80 (numba kernels,
where splitting costs speed, aside)."""

import ast
from pathlib import Path

import arlm

ROOT = Path(arlm.__file__).parent


def _is_kernel(fn: ast.AST) -> bool:
    return any("njit" in ast.unparse(d) or "numba" in ast.unparse(d) for d in fn.decorator_list)


def test_no_module_over_450_lines_and_no_function_over_80():
    long_files, long_functions = [], []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 450:
            long_files.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _is_kernel(node):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.name}: {n} lines")
    assert not long_files and not long_functions, long_files + long_functions
