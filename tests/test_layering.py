"""The package's layers, read from the imports of its source: data flows one way.

``bidsreg.nn`` is a leaf (the networks and their training import nothing of bidsreg outside
``nn/``), and the library (everything but the command line, the Nipype interfaces and the
workflows) imports neither Nipype nor those layers above it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bidsreg

PACKAGE = Path(bidsreg.__file__).resolve().parent
#: The layers that run the library: nothing below them imports them (or Nipype).
APPLICATION = ("bidsreg.cli", "bidsreg.interfaces", "bidsreg.workflows")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (also inside functions), relative imports resolved."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            found.add(prefix)
            found |= {f"{prefix}.{alias.name}" for alias in node.names}
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_import_reader_resolves_relative_imports():
    assert "bidsreg.nn.layers" in _imports(PACKAGE / "nn" / "networks.py")
    assert "bidsreg.image" in _imports(PACKAGE / "methods" / "cnn.py")
    assert "nipype.pipeline.engine" in _imports(PACKAGE / "workflows" / "participant.py")


@pytest.mark.parametrize("path", [p for p in SOURCES if _module(p).startswith("bidsreg.nn")],
                         ids=lambda p: _module(p))
def test_nn_imports_nothing_of_bidsreg_outside_nn(path):
    outside = sorted(name for name in _imports(path) if _inside(name, "bidsreg") and name != "bidsreg"
                     and not _inside(name, "bidsreg.nn"))
    assert not outside, f"{_module(path)} imports {outside}"


@pytest.mark.parametrize("path", [p for p in SOURCES if not any(_inside(_module(p), a) for a in APPLICATION)],
                         ids=lambda p: _module(p))
def test_the_library_imports_neither_nipype_nor_the_layers_above_it(path):
    above = sorted(name for name in _imports(path)
                   if _inside(name, "nipype") or any(_inside(name, layer) for layer in APPLICATION))
    assert not above, f"{_module(path)} imports {above}"
