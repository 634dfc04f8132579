"""The library's architecture, checked from its source: layers, no import circles, no private names across
modules, one place for CuPy, the README's layout table, and every page naming its device."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MBOOK = ROOT / "mbook"
#: Each package and the packages it may import (besides itself). Forward models stand on the core;
#: cryo-EM takes the CTF from the electron package and rotations from geometry; the inverse methods know no
#: physics; tomography projects electron potentials and reconstructs with the inverse solvers; geometry's pose
#: estimation uses tomography's projector; learning unrolls the inverse solvers; segmentation trains them.
ALLOWED = {
    "core": set(),
    "electron": {"core"},
    "light": {"core"},
    "inverse": {"core"},
    "tomography": {"core", "electron", "inverse"},
    "geometry": {"core", "inverse", "tomography"},
    "cryoem": {"core", "electron", "geometry"},
    "learning": {"core", "inverse"},
    "segmentation": {"core", "inverse", "learning"},
    "multimodal": {"core", "electron", "inverse"},
}
MODULES = sorted(p for p in MBOOK.rglob("*.py") if p.name != "__init__.py")


def package_of(path: Path) -> str:
    return path.relative_to(MBOOK).parts[0]


def mbook_imports(path: Path):
    """(module imported, names imported) for every ``from mbook... import`` or ``import mbook...`` in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mbook":
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mbook":
                    yield alias.name, []


def imported_modules(path: Path) -> set[str]:
    """Dotted names of the mbook modules ``path`` imports (``from mbook.core import backend`` gives
    ``mbook.core.backend``)."""
    found = set()
    for module, names in mbook_imports(path):
        for name in names or [""]:
            candidate = f"{module}.{name}" if name else module
            found.add(candidate if (MBOOK.parent / (candidate.replace(".", "/") + ".py")).exists() else module)
    return found


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(MBOOK)) for p in MODULES])
def test_imports_follow_the_layers(path):
    package = package_of(path)
    for module in imported_modules(path):
        parts = module.split(".")
        if len(parts) < 2 or parts[1] not in ALLOWED:
            continue
        assert parts[1] == package or parts[1] in ALLOWED[package], (
            f"mbook/{path.relative_to(MBOOK)} imports {module}: {package} may import only "
            f"{sorted(ALLOWED[package] | {package})}")


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(MBOOK)) for p in MODULES])
def test_no_private_name_crosses_a_module(path):
    for module, names in mbook_imports(path):
        private = [n for n in names if n.startswith("_")]
        assert not private, f"mbook/{path.relative_to(MBOOK)} imports private {private} from {module}"
    source = path.read_text(encoding="utf-8")
    aliases = {name for module, names in mbook_imports(path) for name in names}
    used = {m.group(0) for m in re.finditer(r"\b(\w+)\._[a-z]\w*\(", source) if m.group(1) in aliases}
    assert not used, f"mbook/{path.relative_to(MBOOK)} calls private names of other modules: {sorted(used)}"


def test_no_import_circle():
    graph = {f"mbook.{'.'.join(p.relative_to(MBOOK).with_suffix('').parts)}": imported_modules(p) for p in MODULES}
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for child in graph.get(node, ()):
            if state.get(child) == "open":
                raise AssertionError(f"import circle: {' -> '.join(stack[stack.index(child):] + [child])}")
            if child in graph and child not in state:
                visit(child, stack + [child])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])


def test_only_the_backend_imports_cupy():
    for path in MODULES:
        if path.name == "backend.py":
            continue
        assert not re.search(r"^\s*(import cupy|from cupy)", path.read_text(encoding="utf-8"), re.M), (
            f"mbook/{path.relative_to(MBOOK)} imports CuPy: go through mbook.core.backend")


def test_the_readme_layout_lists_every_module():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for package in ALLOWED:
        row = next((line for line in readme.splitlines() if line.startswith(f"| `mbook/{package}/`")), None)
        assert row is not None, f"README's layout table has no row for mbook/{package}/"
        for path in sorted((MBOOK / package).glob("*.py")):
            if path.name != "__init__.py":
                assert f"`{path.stem}`" in row, f"README's row for mbook/{package}/ does not name {path.stem}"
    packages = {p.name for p in MBOOK.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(ALLOWED), f"packages {sorted(packages)} differ from the layers {sorted(ALLOWED)}"


NOTEBOOKS = sorted(p for p in (ROOT / "book").rglob("*.md") if "format_name: myst" in p.read_text()[:400])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_every_page_prints_its_device_and_copies_no_widget_block(path):
    source = path.read_text(encoding="utf-8")
    assert "backend.describe()" in source, f"{path.name} does not print the device it computes on"
    assert "import ipywidgets" not in source, f"{path.name} builds its own widget: use plotting.explorer"
