"""The declared lazy modules (meterbridge.runtime.lazy.LAZY_MODULES) are the ones bound lazily.

The list is the whole list (``LazyLoader`` refuses any other name,
tests/unit/runtime/test_runtime.py); here the other direction: every declared module is bound
somewhere in the layer, so an entry left behind by a refactor does not stay on the list.
"""

import ast
from pathlib import Path

from meterbridge.runtime.lazy import LAZY_MODULES

LAYER = Path(__file__).resolve().parents[3] / "shared/meterbridge"


def _bound_lazily() -> set[str]:
    names = set()
    for path in LAYER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "LazyLoader"
                and len(node.args) == 3
                and isinstance(node.args[2], ast.Constant)
            ):
                names.add(str(node.args[2].value))
    return names


def test_every_declared_lazy_module_is_bound_by_a_lazy_loader_in_the_layer() -> None:
    # Given the layer's modules
    # When the modules their LazyLoader calls name are collected
    bound = _bound_lazily()
    # Then each declared lazy module is among them, and each has its reason written
    assert sorted(set(LAZY_MODULES) - bound) == []
    assert all(reason.strip() for reason in LAZY_MODULES.values())
