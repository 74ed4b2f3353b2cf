"""The logic layer speaks the domain: no AWS SDK, no web framework, no DynamoDB expression.

Issue 19: every expression, item shape and key attribute lives in ``dal/``; logic takes and
returns models. This walks every module under ``meterbridge/logic`` and fails on an import of
boto3, botocore, FastAPI, Starlette or Mangum, on text that is DynamoDB expression syntax, and
on a subscript of an item's key attributes (``item["pk"]``).
"""

import ast
import re
from pathlib import Path

import pytest

LOGIC = Path(__file__).resolve().parents[3] / "shared" / "meterbridge" / "logic"

FORBIDDEN_IMPORTS = ("boto3", "botocore", "fastapi", "starlette", "mangum")

# DynamoDB expression syntax in a string constant: functions, clauses, placeholders.
EXPRESSION = re.compile(
    r"attribute_(not_)?exists\s*\(|if_not_exists\s*\(|list_append\s*\(|begins_with\s*\("
    r"|\bSET\s+[#\w]+\s*=|\bADD\s+[#\w]+\s+:|\bREMOVE\s+[#\w]"
    r"|[#\w]+\s*(=|<>|<=?|>=?)\s*:\w+|^#\w+$|^:\w+$"
)
KEY_ATTRIBUTES = {"pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"}

# Modules not yet moved behind a repository. Each entry is removed as its module is converted;
# an entry naming a module that is gone or already clean fails the test, so the list only shrinks.
PENDING: set[str] = set()


def _modules() -> list[Path]:
    return sorted(LOGIC.rglob("*.py"))


def violations(path: Path) -> list[str]:
    """What in ``path`` breaks the boundary, as ``line: reason`` strings."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                names = [node.module or ""]
            for name in names:
                if name.split(".")[0] in FORBIDDEN_IMPORTS:
                    found.append(f"{node.lineno}: imports {name}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if EXPRESSION.search(node.value.strip()):
                found.append(f"{node.lineno}: DynamoDB expression {node.value!r}")
        elif isinstance(node, ast.Subscript):
            key = node.slice
            if isinstance(key, ast.Constant) and key.value in KEY_ATTRIBUTES:
                found.append(f"{node.lineno}: item key attribute [{key.value!r}]")
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(LOGIC)))
def test_logic_module_speaks_the_domain(path: Path) -> None:
    rel = str(path.relative_to(LOGIC))
    found = violations(path)
    if rel in PENDING:
        assert found, f"logic/{rel} is clean now: remove it from PENDING"
        return
    assert not found, f"logic/{rel} reaches below the domain:\n" + "\n".join(found)


def test_pending_names_existing_modules() -> None:
    missing = sorted(p for p in PENDING if not (LOGIC / p).exists())
    assert not missing, f"PENDING names modules that are gone: {missing}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('x = "SET lease_until = :zero"', 1),
        ('x = "attribute_exists(pk)"', 1),
        ('x = "#st = :busy AND lease_owner = :old"', 1),
        ("import boto3", 1),
        ("from fastapi import Request", 1),
        ('x = item["pk"]', 1),
        ('x = "tenant provisioned"', 0),
        ('x = record["tenant_id"]', 0),
    ],
)
def test_the_checker_sees_what_it_claims(tmp_path: Path, source: str, expected: int) -> None:
    module = tmp_path / "m.py"
    module.write_text(source + "\n")
    assert len(violations(module)) == expected
