"""Import rules, read from the source with ast: a pure core, layers that only point down, each heavy
library in one place, and no adapter or SDK imported by a deployment that does not use it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.payloads import repo_root

ROOT = Path(repo_root())
PACKAGE = ROOT / "src" / "costroute"
# What the pure core may import: the standard library's pure parts, and the core itself.
CORE_STDLIB = {"__future__", "collections", "dataclasses", "datetime", "decimal", "enum", "json", "math", "re", "typing",
               "urllib"}
# Where each heavy or platform library may be imported (relative to the package; a folder ends in /).
HOMES = {
    "openai": {"providers/openai.py"},
    "anthropic": {"providers/anthropic.py"},
    "httpx2": {"providers/anthropic.py"},
    "prometheus_client": {"observe/prometheus.py"},
    "boto3": {"config/aws.py", "providers/bedrock.py"},
    "botocore": {"config/aws.py", "providers/bedrock.py", "stores/dynamodb.py"},
    "flask": {"web/"},
    "werkzeug": {"web/errors.py"},
    "awsgi": set(),
}
# Each layer of the package and the layers it may import (its own included). Data flows down
# into the core and back up: nothing imports a layer above it, and the web layer never composes.
LAYERS: dict[str, set[str]] = {
    "core": {"core"},
    "breaker": {"breaker"},
    "wirelogs": {"wirelogs"},
    "awswire": {"awswire", "wirelogs"},
    "observe": {"observe", "core"},
    "stores": {"stores", "core"},
    "providers": {"providers", "awswire", "wirelogs", "core"},
    "config": {"config", "providers", "awswire", "core"},
    "service": {"service", "providers", "stores", "breaker", "core"},
    "runtime": {"runtime", "service", "config", "observe", "core"},
    "web": {"web", "runtime", "service", "providers", "stores", "config", "observe", "core"},
    "bootstrap": {"bootstrap", "runtime", "service", "providers", "config", "stores", "breaker", "awswire", "observe",
                  "core"},
    "entry": {"entry", "web", "bootstrap", "config"},
    "wsgi": {"wsgi", "entry"},
    "__init__": set(),
}
# Modules of the providers layer that an adapter may import: the house's shared pieces, never another adapter.
PROVIDERS_SHARED = {"costroute.providers", "costroute.providers.base", "costroute.providers.chat_translation"}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (absolute names)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def roots(path: Path) -> set[str]:
    return {module.split(".")[0] for module in imported_modules(path)}


def layer_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def test_core_imports_only_pure_stdlib_and_the_core_itself() -> None:
    for path in sorted((PACKAGE / "core").glob("*.py")):
        modules = imported_modules(path)
        outside = {m for m in modules if m.split(".")[0] not in CORE_STDLIB and not m.startswith("costroute.core")}
        assert not outside, f"core/{path.name} imports {outside}"
        # os, time, random and friends cannot be imported (above); builtins that do IO are not called.
        calls = {
            node.func.id
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        }
        assert not calls & {"open", "print", "input", "__import__", "exec", "eval"}, f"core/{path.name} does IO"


def test_layers_only_point_down() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = layer_of(path)
        assert layer in LAYERS, f"{path.relative_to(PACKAGE)} is in no known layer"
        for module in imported_modules(path):
            if not module.startswith("costroute."):
                continue
            target = module.split(".")[1]
            assert target in LAYERS[layer], f"{path.relative_to(PACKAGE)} ({layer}) imports {module}"


def test_an_adapter_imports_no_other_adapter() -> None:
    for path in sorted((PACKAGE / "providers").glob("*.py")):
        if path.name in ("__init__.py", "base.py", "chat_translation.py"):
            continue
        own = {m for m in imported_modules(path) if m.startswith("costroute.providers")}
        assert own <= PROVIDERS_SHARED, f"providers/{path.name} imports {own - PROVIDERS_SHARED}"


def test_the_layer_check_is_not_vacuous(tmp_path: Path) -> None:
    """A web module importing the composition root, or the core importing config, is caught."""
    bad_web = tmp_path / "web_bad.py"
    bad_web.write_text("from costroute.bootstrap import build_runtime\n", encoding="utf-8")
    assert "costroute.bootstrap" in imported_modules(bad_web)
    assert "bootstrap" not in LAYERS["web"]
    bad_core = tmp_path / "core_bad.py"
    bad_core.write_text("import os\nfrom costroute.config.settings import Settings\n", encoding="utf-8")
    modules = imported_modules(bad_core)
    assert {m for m in modules if m.split(".")[0] not in CORE_STDLIB and not m.startswith("costroute.core")} == {
        "os", "costroute.config.settings"}


@pytest.mark.parametrize("library", sorted(HOMES))
def test_each_library_is_imported_only_in_its_home(library: str) -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if library in roots(path):
            # A home is a file, or a folder (ending in /) whose every file may import the library.
            assert any(relative == home or (home.endswith("/") and relative.startswith(home))
                       for home in HOMES[library]), f"{relative} imports {library}"


def test_handler_is_the_only_awsgi_user_and_imports_no_adapter() -> None:
    modules = imported_modules(ROOT / "handler.py")
    assert "awsgi" in modules
    assert not {m for m in modules if m.startswith(("costroute.providers.", "costroute.service", "costroute.core"))}


def test_serving_a_mock_route_imports_no_sdk_and_no_other_adapter() -> None:
    script = (
        "import sys, json\n"
        "from costroute.entry import build_app\n"
        "client = build_app().test_client()\n"
        "r = client.post('/route', data=json.dumps({'input': 'hi'}))\n"
        "assert r.status_code == 200, r.data\n"
        "heavy = ('openai', 'anthropic', 'boto3', 'botocore', 'costroute.providers.openai',\n"
        "         'costroute.providers.anthropic', 'costroute.providers.bedrock')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=repo_root(), timeout=60,
                            env={"PATH": "/usr/bin:/bin"}, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"  # after the request's own log line
