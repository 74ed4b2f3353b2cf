"""FastAPI without ``pydantic.v1`` at route construction: its v1 probe, skipped while v1 is absent.

FastAPI (0.165 here) refuses pydantic v1 models. To do so it checks every route's types (and
any object its encoder cannot place) against ``pydantic.v1.BaseModel``, and imports the whole
``pydantic.v1`` package the first time: about 20 ms of a cold start on this machine
(docs/performance/cold_start.md), for a package meterbridge never uses.

A v1 model cannot exist unless ``pydantic.v1`` has been imported, so while it is absent from
``sys.modules`` the answer is ``False`` without importing it. Once anything imports it, FastAPI's
own check runs as before, so a v1 model is still refused exactly as FastAPI refuses it. The same
change was proposed upstream (fastapi pull request 16374); drop this module once the pinned
FastAPI has it. If a FastAPI upgrade renames these functions, ``install`` does nothing and the
only effect is the 20 ms (tests/unit/project/test_cold_start_imports.py notices).

Nothing installs it by importing ``meterbridge.api``: each HTTP handler calls ``install()`` in
its ``with InitPhase():`` block, before the route modules are imported (they declare routes).
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any

# (module, attribute) pairs that hold FastAPI's probes: the definitions in _compat.shared (its
# own helpers look them up there) and the names other FastAPI modules imported from it.
_PROBES = (
    ("fastapi._compat.shared", "is_pydantic_v1_model_class"),
    ("fastapi._compat.shared", "is_pydantic_v1_model_instance"),
    ("fastapi._compat", "is_pydantic_v1_model_instance"),
    ("fastapi.encoders", "is_pydantic_v1_model_instance"),
)


_MARK = "_meterbridge_v1_probe"


def _only_if_v1_loaded(probe: Callable[[Any], bool]) -> Callable[[Any], bool]:
    @functools.wraps(probe)
    def check(obj: Any) -> bool:
        return "pydantic.v1" in sys.modules and probe(obj)

    setattr(check, _MARK, True)
    return check


def install() -> bool:
    """Make FastAPI's v1 probes import nothing while ``pydantic.v1`` is absent; idempotent.

    True when every probe is (now) wrapped; False, changing nothing, if FastAPI no longer has
    them where expected.
    """
    found: list[tuple[Any, str, Callable[[Any], bool]]] = []
    for module_name, attribute in _PROBES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return False
        probe = getattr(module, attribute, None)
        if not callable(probe):
            return False
        found.append((module, attribute, probe))
    for module, attribute, probe in found:
        if not getattr(probe, _MARK, False):
            setattr(module, attribute, _only_if_v1_loaded(probe))
    return True
