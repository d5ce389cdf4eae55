"""Backend names live in the registry: no other harness module spells one (harness/backends/registry.py).

A string literal that IS a backend name (or `NAME:...`, `.../NAME`, or a comma list of names such as a default
`--backends`) outside harness/backends/, the suites, the docs and the tests means a second list of backends
that a new one would have to be added to. Docstrings are documentation and are not scanned.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from harness.backends import registry

ROOT = Path(__file__).resolve().parent.parent

#: modules that still spell engine names, each for a stated reason; an entry that no longer needs its exception
#: fails below, so the list only shrinks (empty: every engine's knowledge lives in its backend module)
EXCEPTIONS: dict[str, str] = {}


def _docstrings(tree: ast.AST) -> set[int]:
    return {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def _spells(value: str, names: set[str]) -> bool:
    if value in names or any(value.startswith(n + ":") or value.endswith((":" + n, "/" + n)) for n in names):
        return True
    parts = [p for p in value.split(",") if p]
    return len(parts) > 1 and all(re.fullmatch(r"[a-z0-9_]+", p) for p in parts) and any(p in names for p in parts)


def hits(path: Path, names: set[str]) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    docs = _docstrings(tree)
    return [f"{path.name}:{n.lineno}: {n.value!r}" for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
            and _spells(n.value, names)]


def scanned() -> list[Path]:
    files = [p for p in (ROOT / "harness").rglob("*.py") if not p.is_relative_to(ROOT / "harness" / "backends")]
    return sorted(files) + [ROOT / "noxfile.py"]


def test_no_backend_name_outside_the_registry_and_backend_modules():
    names = set(registry.BACKENDS)
    found = [f"{p.relative_to(ROOT).parent}/{h}" for p in scanned() if str(p.relative_to(ROOT)) not in EXCEPTIONS
             for h in hits(p, names)]
    assert not found, "backend names spelled outside harness/backends/ (read them from the registry):\n" + \
        "\n".join(found)


def test_every_exception_is_still_needed():
    names = set(registry.BACKENDS)
    stale = [f for f in EXCEPTIONS if not hits(ROOT / f, names)]
    assert not stale, f"no longer spells a backend name: remove from EXCEPTIONS: {stale}"


def test_the_scan_finds_a_name_where_one_is_spelled(tmp_path):
    """The detector itself: a default list and a comparison are found; prose and docstrings are not."""
    ref, unit = registry.reference(), registry.unit_under_test()
    src = tmp_path / "m.py"
    src.write_text(f'"""{unit} in a docstring is documentation."""\n'
                   f'DEFAULT = "{ref},{unit}"\n'
                   f'def f(b):\n    return b == "{unit}"\n'
                   f'X = "the {unit} engine said so"\n')
    found = hits(src, set(registry.BACKENDS))
    assert [h.split(":")[1] for h in found] == ["2", "4"]
