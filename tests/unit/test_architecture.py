"""Import rules, read from the source with ast: a pure core, and each heavy library in one place."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.payloads import repo_root

PACKAGE = Path(repo_root()) / "src" / "costroute"
# What the pure core may import: the standard library's pure parts and itself.
CORE_ALLOWED = {"__future__", "dataclasses", "decimal", "enum", "json", "math", "re", "typing", "urllib", "costroute"}
# Where each heavy or platform library may be imported (relative to the package).
HOMES = {
    "openai": {"providers/openai.py"},
    "boto3": {"config/aws.py"},
    "botocore": {"config/aws.py"},
    "flask": {"web/__init__.py", "web/errors.py", "web/native.py", "web/openai_compat.py", "web/openapi.py"},
    "werkzeug": {"web/errors.py"},
    "awsgi": set(),
}


def imported_roots(path: Path) -> set[str]:
    """Top-level names of every module a file imports, anywhere in it."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_imports_only_pure_stdlib_and_itself() -> None:
    for path in sorted((PACKAGE / "core").glob("*.py")):
        extra = imported_roots(path) - CORE_ALLOWED
        assert not extra, f"{path.name} imports {extra}"
        # os, time, random and friends cannot be imported (above); builtins that do IO are not called.
        calls = {
            node.func.id
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        }
        assert not calls & {"open", "print", "input", "__import__"}, f"{path.name} does IO"


@pytest.mark.parametrize("library", sorted(HOMES))
def test_each_library_is_imported_only_in_its_home(library: str) -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if library in imported_roots(path):
            assert relative in HOMES[library], f"{relative} imports {library}"


def test_serving_a_mock_route_imports_neither_openai_nor_boto3() -> None:
    script = (
        "import sys, json\n"
        "from costroute.entry import build_app as create_app\n"
        "client = create_app().test_client()\n"
        "r = client.post('/route', data=json.dumps({'input': 'hi'}))\n"
        "assert r.status_code == 200, r.data\n"
        "print(sorted(m for m in ('openai', 'boto3', 'botocore') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=repo_root(), timeout=60,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
