"""The layer's import graph (shared/meterbridge): no cycle, no upward import.

Every import counts, deferred ones included; the layers and the walker are in
tests/support/imports.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.imports import cycles, graph, upward

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "shared"


def test_the_layer_has_no_import_cycle() -> None:
    # Given the layer's import graph
    edges = graph(LAYER, "meterbridge")

    # When its strongly connected components are found
    found = cycles(edges)

    # Then none holds more than one module
    assert len(edges) > 50
    assert not found, found


def test_the_layer_imports_only_downward() -> None:
    # Given the layer's import graph
    edges = graph(LAYER, "meterbridge")

    # When each import is compared with the layers
    found = upward(edges)

    # Then none reaches a higher layer, the streaming service or the dev kit
    assert not found, found


def test_the_walker_sees_cycles_and_upward_imports(tmp_path: Path) -> None:
    # Given a package with a cycle through a deferred import, an upward import and a module
    # that imports the dev kit
    package = tmp_path / "meterbridge"
    (package / "logic").mkdir(parents=True)
    (package / "dal").mkdir()
    for init in (package, package / "logic", package / "dal"):
        (init / "__init__.py").write_text("")
    (package / "logic" / "a.py").write_text("from meterbridge.logic import b\n")
    (package / "logic" / "b.py").write_text("def f():\n    from . import a\n")
    (package / "dal" / "store.py").write_text("from meterbridge.logic.a import x\n")
    (package / "errors.py").write_text("import meterbridge_dev.stack\n")

    # When the walker reads it
    edges = graph(tmp_path, "meterbridge")

    # Then it reports the cycle and both upward imports, and nothing else
    assert cycles(edges) == [["meterbridge.logic.a", "meterbridge.logic.b"]]
    assert upward(edges) == [
        "meterbridge.dal.store -> meterbridge.logic.a",
        "meterbridge.errors -> meterbridge_dev.stack",
    ]
