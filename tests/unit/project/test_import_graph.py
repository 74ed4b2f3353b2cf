"""The layer's import graph (shared/meterbridge): no cycle, no upward import, and no module
that no Lambda (functions/*/app.py) can import: what only the operators' CLI runs belongs to
the dev kit (tests/integration/test_layer_build.py checks the same on the built layer).

Every import counts, deferred ones included; the layers and the walker are in
tests/support/imports.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.imports import cycles, graph, unreachable, upward

ROOT = Path(__file__).resolve().parents[3]
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


def test_every_layer_module_is_one_a_lambda_can_import() -> None:
    # Given the layer's import graph and the four Lambdas' entry points
    edges = graph(LAYER, "meterbridge")
    functions = sorted(ROOT.glob("functions/*/app.py"))

    # When the modules they import, directly or not (deferred imports count), are found
    unused = unreachable(edges, functions)

    # Then every module of the layer is among them
    assert len(functions) == 4
    assert not unused, f"in the layer, yet imported by no Lambda (move them to dev/): {unused}"


def test_the_walker_sees_a_module_no_entry_point_reaches(tmp_path: Path) -> None:
    # Given a package whose entry point imports one module, which imports another lazily
    package = tmp_path / "meterbridge"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "used.py").write_text("def f():\n    from meterbridge import lazy\n")
    (package / "lazy.py").write_text("")
    (package / "stray.py").write_text("import json\n")
    entry = tmp_path / "app.py"
    entry.write_text("from meterbridge import used\n")

    # When the modules the entry point cannot reach are listed
    found = unreachable(graph(tmp_path, "meterbridge"), [entry])

    # Then only the stray one is
    assert found == ["meterbridge.stray"]


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
